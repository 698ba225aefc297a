// The editor's properties panel: the selected step's fields (an action's come from its input
// schema, GET /v1/actions), or the workflow's name and trigger. Edits change the editor's
// definition in place and redraw the flow as they are typed.

import { errorBox, field, h, replace } from './dom.js';
import { kindOf } from './graph.js';

const LONG_TEXT = ['body', 'text', 'message', 'notes', 'html', 'prompt', 'description'];

/** The properties panel: the selected step's fields, or the workflow's. */
export function renderProps(ed) {
  if (ed.selected === null || !ed.doc.steps[ed.selected]) {
    ed.selected = null;
    replace(ed.props, h('h2', {}, 'Workflow'), workflowFields(ed));
    return;
  }
  const i = ed.selected;
  const step = ed.doc.steps[i];
  const kind = kindOf(step);
  const up = h('button', { type: 'button', disabled: i === 0 }, 'Move up');
  up.addEventListener('click', () => ed.moveTo(i, i - 1));
  const down = h('button', { type: 'button', disabled: i === ed.doc.steps.length - 1 }, 'Move down');
  down.addEventListener('click', () => ed.moveTo(i, i + 2));
  const del = h('button', { type: 'button', class: 'danger' }, 'Delete block');
  del.addEventListener('click', () => ed.remove(i));
  const done = h('button', { type: 'button' }, 'Workflow settings');
  done.addEventListener('click', () => ed.select(null));
  replace(
    ed.props,
    h('h2', {}, `Step ${i + 1}`),
    text(ed, 'Step id', step.id, (v) => (step.id = v), 'Letters, digits and _; gotos name it.', { name: 'id' }),
    kindFields(ed, step, kind),
    h('div', { class: 'actions' }, up, down, del, done),
  );
  markProblems(ed, i);
}

/** The control a problem's path (inside step `i`) belongs to, by its name in the panel. */
function controlName(sub) {
  let m;
  if ((m = /^input\.([^.[]+)/.exec(sub))) return m[1];
  if ((m = /^branch\[(\d+)\]\.(when|goto|else)/.exec(sub))) return `${m[2]}-${m[1]}`;
  if ((m = /^wait_for\.(\w+)/.exec(sub))) return m[1];
  if ((m = /^for_each\.(\w+)/.exec(sub))) return m[1] === 'steps' ? 'for_each_steps' : m[1];
  if ((m = /^(on_error|timeout|delay|id|connection|set|input)\b/.exec(sub))) return m[1];
  return null;
}

/** The server's problems on step `i`, shown on the fields they name. */
function markProblems(ed, i) {
  const prefix = `steps[${i}]`;
  for (const p of ed.problems) {
    if (!(p.path || '').startsWith(prefix)) continue;
    const name = controlName(p.path.slice(prefix.length).replace(/^\./, ''));
    const control = name && ed.props.querySelector(`[name="${CSS.escape(name)}"]`);
    if (!control) continue;
    control.setAttribute('aria-invalid', 'true');
    const details = control.closest('details');
    if (details) details.open = true;
    const note = h('p', { class: 'field-error', id: `${control.id}-error` }, p.message);
    control.insertAdjacentElement('afterend', note);
    control.setAttribute('aria-describedby', `${control.getAttribute('aria-describedby') || ''} ${note.id}`.trim());
  }
}

/** A text field bound to a setter; the flow redraws as it is typed. */
function text(ed, label, value, set, help, { name, long = false, required = false } = {}) {
  const control = long ? h('textarea', { rows: 4, name, spellcheck: 'false' }, value ?? '') : h('input', { type: 'text', name, value: value ?? '', spellcheck: 'false' });
  control.addEventListener('input', () => {
    set(control.value);
    ed.changed();
  });
  return field(label, control, help, { required });
}

/** A JSON field: applied when it parses, marked invalid when it does not. */
function json(ed, label, value, set, help, name) {
  const control = h('textarea', { rows: 4, name, class: 'code', spellcheck: 'false' }, value === undefined ? '' : JSON.stringify(value, null, 2));
  control.addEventListener('input', () => {
    if (control.value.trim() === '') {
      set(undefined);
      control.removeAttribute('aria-invalid');
      ed.changed();
      return;
    }
    try {
      set(JSON.parse(control.value));
      control.removeAttribute('aria-invalid');
      ed.changed();
    } catch (_) {
      control.setAttribute('aria-invalid', 'true');
    }
  });
  return field(label, control, `${help ? help + ' ' : ''}(JSON)`);
}

function kindFields(ed, step, kind) {
  switch (kind) {
    case 'action':
      return actionFields(ed, step);
    case 'delay':
      return typeof step.delay === 'string' || step.delay === undefined
        ? text(ed, 'Wait for', step.delay, (v) => (step.delay = v), 'A duration: 30s, 15m, 2h, 1d.', { name: 'delay' })
        : json(ed, 'Delay', step.delay, (v) => (step.delay = v), '{for}, {until} or {at, timezone}.', 'delay');
    case 'branch':
      return branchFields(ed, step);
    case 'wait_for': {
      const w = (step.wait_for = step.wait_for || {});
      const opt = (k) => (v) => (v === '' ? delete w[k] : (w[k] = v));
      return [
        text(ed, 'Event type', w.event, opt('event'), 'The event to wait for, e.g. lead.replied.', { name: 'event', required: true }),
        text(ed, 'Match', w.match, opt('match'), 'Optional condition on the awaited event (Rhai).', { name: 'match' }),
        text(ed, 'Timeout', w.timeout, opt('timeout'), 'How long to wait, e.g. 1d.', { name: 'timeout' }),
        text(ed, 'On timeout go to', w.on_timeout, opt('on_timeout'), 'A step id or end; default: the next step.', { name: 'on_timeout' }),
      ];
    }
    case 'set':
      return json(ed, 'Values', step.set, (v) => (step.set = v), 'Names and Rhai expressions, read later as vars.<name>.', 'set');
    case 'end':
      return h('p', { class: 'help' }, 'Ends the run here.');
    case 'for_each': {
      const f = (step.for_each = step.for_each || {});
      const opt = (k, number = false) => (v) => (v === '' ? delete f[k] : (f[k] = number && !Number.isNaN(Number(v)) ? Number(v) : v));
      return [
        text(ed, 'Items', typeof f.items === 'string' ? f.items : JSON.stringify(f.items ?? ''), opt('items'), 'A list, usually {{ steps.<id>.output.… }}.', { name: 'items', required: true }),
        text(ed, 'Each item as', f.as, opt('as'), 'The name the inner steps read it by, e.g. lead.', { name: 'as', required: true }),
        text(ed, 'At once', f.concurrency === undefined ? '' : String(f.concurrency), opt('concurrency', true), 'Children active at once (default 10, at most 100).', { name: 'concurrency' }),
        text(ed, 'At most', f.max_items === undefined ? '' : String(f.max_items), opt('max_items', true), 'A longer list fails the step (default 10,000).', { name: 'max_items' }),
        json(ed, 'Steps for each item', f.steps, (v) => (f.steps = v), 'Run in a child run per item; they read the item by its name.', 'for_each_steps'),
      ];
    }
    default:
      return json(ed, 'Step', step, () => {}, 'Edit it in the text view.', 'raw');
  }
}

function actionFields(ed, step) {
  const action = ed.actions[step.action];
  const out = [h('p', { class: 'meta' }, `Action ${step.action}`)];
  if (!action) {
    out.push(h('p', { class: 'warn' }, 'This server does not list this action kind.'));
    out.push(json(ed, 'Input', step.input, (v) => (step.input = v), '', 'input'));
    return out;
  }
  if (action.providers.length) {
    const mine = ed.connections.filter((c) => action.providers.includes(c.provider));
    const select = h(
      'select',
      { name: 'connection' },
      h('option', { value: '' }, '— the account’s only one —'),
      mine.map((c) => h('option', { value: c.name, selected: c.name === step.connection }, `${c.name} (${c.provider}${c.sandbox ? ', sandbox' : ''})`)),
    );
    select.addEventListener('change', () => {
      if (select.value) step.connection = select.value;
      else delete step.connection;
      ed.changed();
    });
    out.push(field('Connection', select, `Which ${action.providers.join('/')} connection it sends through.`));
  }
  const schema = action.input_schema || {};
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  step.input = step.input && typeof step.input === 'object' ? step.input : {};
  const input = step.input;
  const fields = Object.entries(props).sort(([a], [b]) => Number(required.has(b)) - Number(required.has(a)));
  for (const [name, prop] of fields) {
    const types = typesOf(prop, schema);
    const help = prop.description || '';
    const unset = (v) => (v === '' || v === undefined ? delete input[name] : null);
    if (types.length === 1 && types[0] === 'boolean') {
      const box = h('input', { type: 'checkbox', name, checked: input[name] === true });
      box.addEventListener('change', () => {
        input[name] = box.checked;
        ed.changed();
      });
      out.push(h('div', { class: 'field' }, h('label', {}, box, ` ${name}`), help ? h('p', { class: 'help' }, help) : null));
    } else if (types.every((t) => ['string', 'number', 'integer', 'null'].includes(t)) && types.length && (typeof input[name] !== 'object' || input[name] === null)) {
      const numeric = types.includes('number') || types.includes('integer');
      out.push(
        text(ed, 
          name,
          input[name] === undefined || input[name] === null ? '' : String(input[name]),
          (v) => {
            if (unset(v) !== null) return;
            input[name] = numeric && !types.includes('string') && v.trim() !== '' && !Number.isNaN(Number(v)) ? Number(v) : v;
          },
          help,
          { name, long: LONG_TEXT.includes(name), required: required.has(name) },
        ),
      );
    } else {
      out.push(json(ed, name, input[name], (v) => (v === undefined ? delete input[name] : (input[name] = v)), help, name));
    }
  }
  const opt = (k) => (v) => (v === '' ? delete step[k] : (step[k] = v));
  const i = ed.doc.steps.indexOf(step);
  const flagged = ed.problems.some((p) => new RegExp(`^steps\\[${i}\\]\\.(on_error|timeout)`).test(p.path || ''));
  out.push(
    h(
      'details',
      { open: flagged || Boolean(step.on_error || step.timeout) },
      h('summary', {}, 'Errors and timing'),
      text(ed, 'On error', typeof step.on_error === 'string' ? step.on_error : '', opt('on_error'), 'fail (default), continue, or goto <step id>.', { name: 'on_error' }),
      text(ed, 'Timeout', step.timeout, opt('timeout'), 'At most 10m, e.g. 20s.', { name: 'timeout' }),
    ),
  );
  return out;
}

function branchFields(ed, step) {
  step.branch = Array.isArray(step.branch) ? step.branch : [];
  const arms = step.branch;
  const rows = arms.map((arm, j) => {
    const remove = h('button', { type: 'button', class: 'danger', 'aria-label': `Remove arm ${j + 1}` }, 'Remove');
    remove.addEventListener('click', () => {
      arms.splice(j, 1);
      ed.changed();
      renderProps(ed);
    });
    if (arm && arm.else !== undefined) {
      return h('fieldset', { class: 'arm' }, h('legend', {}, 'Otherwise'), text(ed, 'Go to', arm.else, (v) => (arm.else = v), 'A step id or end.', { name: `else-${j}` }), remove);
    }
    return h(
      'fieldset',
      { class: 'arm' },
      h('legend', {}, `If ${j + 1}`),
      text(ed, 'When', arm.when, (v) => (arm.when = v), 'A condition (Rhai), e.g. event.score > 5.', { name: `when-${j}` }),
      text(ed, 'Go to', arm.goto, (v) => (arm.goto = v), 'A step id or end.', { name: `goto-${j}` }),
      remove,
    );
  });
  const add = h('button', { type: 'button' }, 'Add condition');
  add.addEventListener('click', () => {
    const at = arms.findIndex((a) => a && a.else !== undefined);
    arms.splice(at < 0 ? arms.length : at, 0, { when: 'true', goto: 'end' });
    ed.changed();
    renderProps(ed);
  });
  const addElse = h('button', { type: 'button', disabled: arms.some((a) => a && a.else !== undefined) }, 'Add otherwise');
  addElse.addEventListener('click', () => {
    arms.push({ else: 'end' });
    ed.changed();
    renderProps(ed);
  });
  return [...rows, h('div', { class: 'actions' }, add, addElse)];
}

function workflowFields(ed) {
  const doc = ed.doc;
  const trigger = doc.trigger && typeof doc.trigger === 'object' ? doc.trigger : {};
  const type = ['webhook', 'event', 'schedule', 'manual', 'call'].find((t) => t in trigger) || 'manual';
  const select = h('select', { name: 'trigger' }, ['webhook', 'event', 'schedule', 'manual', 'call'].map((t) => h('option', { value: t, selected: t === type }, t)));
  select.addEventListener('change', () => {
    const fresh = { webhook: { webhook: {} }, event: { event: 'lead.created' }, schedule: { schedule: { cron: '0 0 9 * * Mon-Fri' } }, manual: { manual: {} }, call: { call: {} } };
    doc.trigger = fresh[select.value];
    ed.changed();
    renderProps(ed);
  });
  const parts = [
    text(ed, 
      'Name',
      doc.name,
      (v) => {
        doc.name = v;
        ed.renderHead();
      },
      '',
      { name: 'name', required: true },
    ),
    field('Trigger', select, 'What starts a run.'),
  ];
  if (type === 'event') {
    parts.push(text(ed, 'Event type', trigger.event, (v) => (trigger.event = v), 'e.g. lead.created', { name: 'event', required: true }));
    parts.push(text(ed, 'Only when', trigger.when, (v) => (v === '' ? delete trigger.when : (trigger.when = v)), 'Optional condition (Rhai).', { name: 'when' }));
  }
  if (type === 'schedule') {
    const s = (trigger.schedule = trigger.schedule || {});
    parts.push(text(ed, 'Cron', s.cron, (v) => (s.cron = v), 'Seconds first: 0 0 9 * * Mon-Fri.', { name: 'cron', required: true }));
    parts.push(text(ed, 'Timezone', s.timezone, (v) => (v === '' ? delete s.timezone : (s.timezone = v)), 'IANA zone; the account’s by default.', { name: 'timezone' }));
  }
  if (ed.problems.some((p) => !/^steps\[/.test(p.path || ''))) {
    parts.push(errorBox('Problems with the workflow:', ed.problems.filter((p) => !/^steps\[/.test(p.path || ''))));
  }
  return parts;
}

/** The JSON types a schema property accepts (following a local $ref and anyOf/oneOf). */
function typesOf(prop, root) {
  if (!prop || typeof prop !== 'object') return [];
  if (prop.$ref) {
    const name = prop.$ref.split('/').pop();
    const defs = root.$defs || root.definitions || {};
    return defs[name] ? typesOf(defs[name], root) : [];
  }
  if (Array.isArray(prop.type)) return prop.type;
  if (typeof prop.type === 'string') return [prop.type];
  if (prop.enum) return ['string'];
  for (const k of ['anyOf', 'oneOf']) if (Array.isArray(prop[k])) return [...new Set(prop[k].flatMap((p) => typesOf(p, root)))];
  return [];
}
