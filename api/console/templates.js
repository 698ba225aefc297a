// Templates: the gallery (GET /v1/templates), a template's form generated from its typed
// parameters and the account's connections, a test run (timeline and outbox preview), and
// turning it on.

import { api, describe } from './api.js';
import { errorBox, field, h, heading, replace, toast } from './dom.js';
import { outboxList, timeline } from './runs.js';

/** #/templates or #/templates/<slug>. */
export async function render(main, route) {
  if (route.parts[1]) return renderForm(main, route.parts[1]);
  const { templates } = await api('GET', '/v1/templates');
  replace(
    main,
    heading('Templates'),
    h('p', { class: 'muted' }, 'Pick a template, fill a short form, try it, and turn it on.'),
    h(
      'ul',
      { class: 'cards', 'aria-label': 'Templates' },
      templates.map((t) =>
        h(
          'li',
          { class: 'card template-card', 'data-slug': t.slug },
          h('h2', {}, t.title),
          h('p', {}, t.description),
          h('p', { class: 'meta' }, `Starts on: ${triggerText(t.trigger)}`),
          t.connections.length ? h('p', { class: 'meta' }, `Sends through: ${t.connections.join(', ')}`) : null,
          h('a', { class: 'button primary', href: `#/templates/${encodeURIComponent(t.slug)}`, 'aria-label': `Use template ${t.title}` }, 'Use template'),
        ),
      ),
    ),
  );
}

/** A trigger in words. */
export function triggerText(trigger) {
  if (!trigger || typeof trigger !== 'object') return 'manual start';
  if (trigger.event) return `the event ${trigger.event}${trigger.when ? ' (when ' + trigger.when + ')' : ''}`;
  if (trigger.webhook) return 'a webhook';
  if (trigger.schedule) return `the schedule ${trigger.schedule.cron || ''}`;
  if (trigger.call) return 'a phone call';
  return 'manual start';
}

/** A sample event to test a template with, by its trigger. */
function sampleEvent(trigger) {
  const lead = { id: 'L1', first_name: 'Ada', last_name: 'Lovelace', email: 'ada@example.com', phone: '+15557654321' };
  if (trigger && trigger.event && trigger.event.startsWith('call.')) {
    return { call: { status: 'no-answer', from: '+15557654321' }, lead };
  }
  return { lead, invoice: { id: 'INV-1', amount: 120, due_date: '2026-12-31' }, quote: { id: 'Q-1', total: 450 }, rating: 2, comment: 'Too slow' };
}

const INPUT_TYPES = { string: 'text', phone: 'tel', email: 'email', duration: 'text', number: 'number', connection: 'text' };

function paramControl(p, connections) {
  const value = p.default === undefined || p.default === null ? '' : String(p.default);
  if (p.type === 'connection') {
    return h('select', { name: p.name }, h('option', { value: '' }, '— choose —'), connections.map((c) => h('option', { value: c.name, selected: c.name === value }, `${c.name} (${c.provider}${c.sandbox ? ', sandbox' : ''})`)));
  }
  const attrs = { type: INPUT_TYPES[p.type] || 'text', name: p.name, value, required: p.required };
  if (p.type === 'phone') Object.assign(attrs, { placeholder: '+15550001111', pattern: '\\+[1-9][0-9]{6,14}', inputmode: 'tel' });
  if (p.type === 'duration') Object.assign(attrs, { placeholder: '1d', pattern: '\\s*([0-9]+\\s*[smhdw]\\s*)+' });
  if (p.type === 'email') attrs.placeholder = 'you@example.com';
  if (p.type === 'number') attrs.step = 'any';
  return h('input', attrs);
}

async function renderForm(main, slug) {
  const [template, { connections }] = await Promise.all([api('GET', `/v1/templates/${encodeURIComponent(slug)}`), api('GET', '/v1/connections?limit=200')]);
  let workflowId = null;

  const controls = {};
  const paramFields = template.params.map((p) => {
    const control = paramControl(p, connections);
    controls[p.name] = { control, param: p };
    const help = [p.help, p.type === 'duration' ? ' (a duration: 30m, 2h, 1d, 1w)' : ''].join('');
    return field(label(p.name), control, help, { required: p.required });
  });
  const pickers = {};
  const connectionFields = template.connections.map((provider) => {
    const mine = connections.filter((c) => c.provider === provider);
    const select = h('select', { name: `connection-${provider}` }, mine.map((c) => h('option', { value: c.name }, `${c.name}${c.sandbox ? ' (sandbox)' : ''}`)));
    pickers[provider] = select;
    if (!mine.length) {
      return h('div', { class: 'field' }, h('p', { class: 'warn' }, `This template sends through ${provider}, and the account has no ${provider} connection. `, h('a', { href: '#/connections' }, 'Create one'), ' (a sandbox connection works for trying it).'));
    }
    return field(`${provider} connection`, select, `The ${provider} connection its ${provider} steps send through.`);
  });
  const nameInput = h('input', { type: 'text', name: 'workflow-name', placeholder: template.title });
  const eventText = h('textarea', { name: 'test-event', rows: 8, spellcheck: 'false', class: 'code' }, JSON.stringify(sampleEvent(template.trigger), null, 2));
  const status = h('div', { class: 'status-area', 'aria-live': 'polite' });
  const results = h('div', { class: 'test-results' });

  const body = () => {
    const params = {};
    for (const [name, { control, param }] of Object.entries(controls)) {
      const v = control.value.trim();
      if (v === '') continue;
      params[name] = param.type === 'number' ? Number(v) : v;
    }
    const chosen = {};
    for (const [provider, select] of Object.entries(pickers)) if (select.value) chosen[provider] = select.value;
    const out = { params, connections: chosen };
    if (nameInput.value.trim()) out.name = nameInput.value.trim();
    return out;
  };

  const showProblem = (e) => {
    for (const { control } of Object.values(controls)) control.removeAttribute('aria-invalid');
    for (const d of e.details || []) {
      const m = /^params\.(.+)$/.exec(d.path || '');
      if (m && controls[m[1]]) controls[m[1]].control.setAttribute('aria-invalid', 'true');
    }
    if (e.code === 'already_enabled' && e.extra && e.extra.workflow_id) {
      replace(
        status,
        errorBox(describe(e)),
        h('p', {}, h('a', { href: `#/workflows/${encodeURIComponent(e.extra.workflow_id)}` }, 'Open the workflow you already have'), ', or give this copy a name of its own under “More options”.'),
      );
    } else {
      replace(status, errorBox(describe(e), e.details));
    }
  };

  /** The workflow this form made (turned off until "Turn on"), made on first use. */
  let madeWith = null;
  const ensureWorkflow = async () => {
    const wanted = JSON.stringify(body());
    if (workflowId && wanted === madeWith) return workflowId;
    if (workflowId) {
      // The form changed since the last test: try the new values on a fresh copy.
      await api('DELETE', `/v1/workflows/${encodeURIComponent(workflowId)}`);
      workflowId = null;
    }
    const created = await api('POST', `/v1/templates/${encodeURIComponent(slug)}/enable`, JSON.parse(wanted));
    workflowId = created.id;
    madeWith = wanted;
    // Kept off while it is being tried: "Turn on" enables it.
    await api('POST', `/v1/workflows/${encodeURIComponent(workflowId)}/disable`);
    return workflowId;
  };

  const testRun = async (e) => {
    e.preventDefault();
    let event;
    try {
      event = JSON.parse(eventText.value || '{}');
    } catch (err) {
      replace(status, errorBox(`The test event is not valid JSON: ${err.message}`));
      return;
    }
    replace(status, h('p', { class: 'muted' }, 'Running a test…'));
    try {
      const id = await ensureWorkflow();
      const result = await api('POST', `/v1/workflows/${encodeURIComponent(id)}/test`, { event });
      replace(status, h('p', { class: 'ok' }, `Test run ${result.run.status}. Nothing was sent: this is what a lead would receive.`));
      replace(
        results,
        h('h2', {}, 'Test run'),
        h('div', { class: 'two-col' }, h('section', { 'aria-label': 'Timeline' }, h('h3', {}, 'Timeline'), timeline(result.run)), h('section', { 'aria-label': 'Outbox preview' }, h('h3', {}, `Outbox preview (${result.outbox.length})`), outboxList(result.outbox))),
      );
      results.scrollIntoView({ block: 'start' });
    } catch (err) {
      showProblem(err);
    }
  };

  const turnOn = h('button', { type: 'button', class: 'primary', id: 'turn-on' }, 'Turn on');
  turnOn.addEventListener('click', async () => {
    replace(status, h('p', { class: 'muted' }, 'Turning it on…'));
    try {
      let id = workflowId;
      if (id) await api('POST', `/v1/workflows/${encodeURIComponent(id)}/enable`);
      else id = (await api('POST', `/v1/templates/${encodeURIComponent(slug)}/enable`, body())).id;
      workflowId = id;
      toast(`${template.title} is on.`);
      replace(status, h('p', { class: 'ok' }, `${template.title} is on. `, h('a', { href: `#/workflows/${encodeURIComponent(id)}` }, 'Open the workflow')));
    } catch (err) {
      showProblem(err);
    }
  });

  replace(
    main,
    heading(template.title, h('a', { href: '#/templates', class: 'button' }, 'All templates')),
    h('p', {}, template.description),
    h(
      'form',
      { class: 'card', id: 'template-form', onsubmit: testRun, novalidate: true },
      h('fieldset', {}, h('legend', {}, 'Your details'), paramFields),
      connectionFields.length ? h('fieldset', {}, h('legend', {}, 'Connections'), connectionFields) : null,
      h('details', {}, h('summary', {}, 'More options'), field('Workflow name', nameInput, 'A name of its own (needed to make a second copy of a template).'), field('Test event (JSON)', eventText, 'The event a test run starts with.')),
      h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'test-run' }, 'Test run'), turnOn),
      status,
    ),
    results,
  );
}

function label(name) {
  const s = name.replace(/_/g, ' ');
  return s.charAt(0).toUpperCase() + s.slice(1);
}
