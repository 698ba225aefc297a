// Runs: a filtered list (status, workflow), and one run's timeline updating live over SSE
// (GET /v1/runs/{id}/events, read with fetch since EventSource cannot send the key), with
// cancel and retry. Also the timeline and outbox renderers the template test run reuses.

import { api, describe, streamEvents } from './api.js';
import { badge, errorBox, field, h, heading, replace, show, toast, when } from './dom.js';

const STATUSES = ['queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled'];
const FINAL = ['succeeded', 'failed', 'cancelled'];

/** #/runs[?status=&workflow_id=] or #/runs/<id>. */
export async function render(main, route) {
  if (route.parts[1]) return renderRun(main, route.parts[1]);
  const status = route.query.get('status') || '';
  const workflowId = route.query.get('workflow_id') || '';
  const parent = route.query.get('parent_run_id') || '';
  const query = `${status ? '&status=' + encodeURIComponent(status) : ''}${workflowId ? '&workflow_id=' + encodeURIComponent(workflowId) : ''}${parent ? '&parent_run_id=' + encodeURIComponent(parent) : ''}`;
  const { workflows } = await api('GET', '/v1/workflows?limit=200');
  const names = Object.fromEntries(workflows.map((w) => [w.id, w.name]));
  const statusSelect = h('select', { name: 'status' }, h('option', { value: '' }, 'Any status'), STATUSES.map((s) => h('option', { value: s, selected: s === status }, s)));
  const workflowSelect = h('select', { name: 'workflow_id' }, h('option', { value: '' }, 'Any workflow'), workflows.map((w) => h('option', { value: w.id, selected: w.id === workflowId }, w.name)));
  const filter = h(
    'form',
    {
      class: 'filters',
      onsubmit: (e) => {
        e.preventDefault();
        const q = new URLSearchParams();
        if (statusSelect.value) q.set('status', statusSelect.value);
        if (workflowSelect.value) q.set('workflow_id', workflowSelect.value);
        location.hash = `#/runs${q.toString() ? '?' + q : ''}`;
      },
    },
    field('Status', statusSelect),
    field('Workflow', workflowSelect),
    h('button', { type: 'submit' }, 'Filter'),
  );
  const tbody = h('tbody');
  const table = h(
    'table',
    { class: 'table' },
    h('thead', {}, h('tr', {}, ['Run', 'Workflow', 'Status', 'Started', 'Finished'].map((t) => h('th', { scope: 'col' }, t)))),
    tbody,
  );
  const empty = h('p', { class: 'muted' }, 'No runs match.');
  const more = h('button', { type: 'button', id: 'more-runs' }, 'Load more');
  const live = h('span', { class: 'live' }, '');
  const problem = h('div', { 'aria-live': 'polite' });
  let cursor = null;
  let pages = 0;
  const row = (r) =>
    h(
      'tr',
      {},
      h(
        'td',
        {},
        h('a', { href: `#/runs/${encodeURIComponent(r.id)}` }, r.id.slice(-8)),
        r.test ? h('span', { class: 'tag' }, 'test') : null,
        r.parent_run_id ? h('span', { class: 'tag' }, `item ${r.item_index}`) : null,
      ),
      h('td', { 'data-label': 'Workflow' }, names[r.workflow_id] || r.workflow_id),
      h('td', { 'data-label': 'Status' }, badge(r.status)),
      h('td', { 'data-label': 'Started' }, when(r.started_at || r.created_at)),
      h('td', { 'data-label': 'Finished' }, when(r.finished_at)),
    );
  const load = async (fresh) => {
    const page = await api('GET', `/v1/runs?limit=50${query}${!fresh && cursor ? '&cursor=' + encodeURIComponent(cursor) : ''}`);
    if (fresh) {
      replace(tbody);
      pages = 0;
    }
    pages += 1;
    for (const r of page.runs) tbody.appendChild(row(r));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    table.hidden = tbody.childNodes.length === 0;
    empty.hidden = !table.hidden;
  };
  more.addEventListener('click', async () => {
    try {
      await load(false);
    } catch (e) {
      replace(problem, errorBox(describe(e)));
    }
  });
  const children = parent ? h('p', {}, 'The child runs of ', h('a', { href: `#/runs/${encodeURIComponent(parent)}` }, `run ${parent.slice(-8)}`), ' (one per item of its for_each).') : null;
  replace(main, heading('Runs', live), filter, children, problem, table, empty, more);
  await load(true);

  // Live: while only the first page is shown, any change of the account's runs reloads it
  // (at most once a second).
  const controller = new AbortController();
  let pending = null;
  const refresh = () => {
    if (pending || pages > 1) return;
    pending = setTimeout(async () => {
      pending = null;
      try {
        await load(true);
      } catch (e) {
        replace(problem, errorBox(describe(e)));
      }
    }, 1000);
  };
  live.textContent = 'live';
  live.className = 'live on';
  streamEvents(`/v1/events/stream${workflowId ? '?workflow_id=' + encodeURIComponent(workflowId) : ''}`, refresh, controller.signal).catch(() => {
    live.textContent = '';
    live.className = 'live';
  });
  return () => {
    clearTimeout(pending);
    controller.abort();
  };
}

async function renderRun(main, id) {
  const path = `/v1/runs/${encodeURIComponent(id)}`;
  const controller = new AbortController();
  const live = h('span', { class: 'live', 'aria-live': 'polite' }, 'connecting…');
  const head = h('div');
  const body = h('div', { id: 'run-timeline' });
  const status = h('div', { 'aria-live': 'polite' });
  let current = null;
  let workflowName = null;

  const draw = async (run) => {
    current = run;
    if (workflowName === null) {
      workflowName = run.workflow_id;
      api('GET', `/v1/workflows/${encodeURIComponent(run.workflow_id)}`)
        .then((w) => {
          workflowName = w.name;
          if (current) drawHead(current);
        })
        .catch(() => {});
    }
    drawHead(run);
    replace(body, timeline(run));
  };
  const drawHead = (run) => {
    const cancel = h('button', { type: 'button', id: 'cancel-run', disabled: FINAL.includes(run.status) }, 'Cancel run');
    cancel.addEventListener('click', () => act('cancel'));
    const retry = h('button', { type: 'button', id: 'retry-run', disabled: !['failed', 'cancelled'].includes(run.status) && !run.steps.some((s) => s.status === 'outcome_unknown') }, 'Retry run');
    retry.addEventListener('click', () => act('retry'));
    replace(
      head,
      heading(`Run ${run.id.slice(-8)}`, cancel, retry),
      h(
        'dl',
        { class: 'facts' },
        h('dt', {}, 'Status'),
        h('dd', { id: 'run-status' }, badge(run.status)),
        h('dt', {}, 'Workflow'),
        h('dd', {}, h('a', { href: `#/workflows/${encodeURIComponent(run.workflow_id)}` }, workflowName || run.workflow_id), ` (version ${run.version})`),
        h('dt', {}, 'Started'),
        h('dd', {}, when(run.started_at || run.created_at)),
        h('dt', {}, 'Finished'),
        h('dd', {}, when(run.finished_at)),
        run.parent_run_id ? [h('dt', {}, 'Parent run'), h('dd', {}, h('a', { href: `#/runs/${encodeURIComponent(run.parent_run_id)}` }, run.parent_run_id.slice(-8)), ` (item ${run.item_index})`)] : null,
        run.steps.some((s) => s.output && Array.isArray(s.output.children))
          ? [h('dt', {}, 'Child runs'), h('dd', {}, h('a', { href: `#/runs?parent_run_id=${encodeURIComponent(run.id)}` }, 'One per item of its for_each'))]
          : null,
        h('dt', {}, 'Live'),
        h('dd', {}, live),
      ),
      run.error ? errorBox(`Failed at ${run.error.step_id || 'the start'}: ${run.error.message} (${run.error.code})`) : null,
      h('details', {}, h('summary', {}, 'Event'), h('pre', { class: 'code' }, show(run.event))),
    );
  };
  const act = async (what) => {
    try {
      await api('POST', `${path}/${what}`);
      toast(what === 'cancel' ? 'The run is cancelled.' : 'The run is queued again.');
      await draw(await api('GET', path));
      if (what === 'retry') follow();
    } catch (e) {
      replace(status, errorBox(describe(e), e.details));
    }
  };
  let following = false;
  const follow = async () => {
    if (following) return;
    following = true;
    live.textContent = 'live';
    live.className = 'live on';
    try {
      await streamEvents(
        `${path}/events`,
        async (type, data) => {
          if (type === 'snapshot') await draw(data);
          else await draw(await api('GET', path));
        },
        controller.signal,
      );
      if (!controller.signal.aborted) {
        await draw(await api('GET', path));
        live.textContent = 'finished';
        live.className = 'live';
      }
    } catch (e) {
      if (!controller.signal.aborted) {
        live.textContent = 'disconnected';
        live.className = 'live';
        replace(status, errorBox(`The live stream stopped: ${describe(e)}`));
      }
    } finally {
      following = false;
    }
  };

  replace(main, head, status, h('h2', {}, 'Timeline'), body);
  await draw(await api('GET', path));
  follow();
  return () => controller.abort();
}

/** A run's steps, with waits, retries, skips and contact rules explained. */
export function timeline(run) {
  if (!run.steps.length) return h('p', { class: 'muted' }, 'No step has run yet.');
  return h(
    'ol',
    { class: 'timeline' },
    run.steps.map((s) =>
      h(
        'li',
        { class: `step step-${s.status}`, 'data-step': s.id },
        h('div', { class: 'step-head' }, h('strong', {}, s.id), ' ', badge(s.status), s.attempts > 1 ? h('span', { class: 'meta' }, ` attempt ${s.attempts}`) : null),
        explain(s),
        s.error ? h('p', { class: 'step-error' }, `${s.error.class === 'retryable' && !['failed'].includes(s.status) ? 'Will retry after: ' : 'Error: '}${s.error.message} (${s.error.code})`) : null,
        s.output !== null && s.output !== undefined && s.status !== 'waiting' ? h('details', {}, h('summary', {}, 'Output'), h('pre', { class: 'code' }, show(s.output))) : null,
      ),
    ),
  );
}

function explain(s) {
  const lines = [];
  if (s.status === 'waiting' && s.output && s.output.waiting_for_children) lines.push(`Waiting for its ${s.output.total} child runs.`);
  else if (s.status === 'waiting' && s.due_at) lines.push(`Waiting until ${when(s.due_at)}.`);
  if (s.status === 'pending' && s.due_at) lines.push(`Due again at ${when(s.due_at)}.`);
  if (s.status === 'outcome_unknown') lines.push('Interrupted while sending: it may or may not have reached the recipient. It is not resent by itself; check, then retry the run if it was not sent.');
  if (s.status === 'skipped') lines.push(`Not sent: ${s.output && s.output.skipped === 'opted_out' ? 'the recipient opted out' : 'skipped'}. The run went on.`);
  const rules = s.contact_rules;
  if (rules && rules.quiet_hours === 'deferred') lines.push(`Deferred by quiet hours until ${when(rules.until)} (${rules.timezone})${rules.fast_forwarded ? ', fast-forwarded in this test run' : ''}.`);
  if (rules && rules.quiet_hours === 'ignored') lines.push(`Quiet hours ignored (contact_rules: ignore); it would have waited until ${when(rules.would_wait_until)} (${rules.timezone}).`);
  if (s.finished_at) lines.push(`Finished ${when(s.finished_at)}.`);
  return lines.length ? h('p', { class: 'explain' }, lines.join(' ')) : null;
}

/** Outbox messages as cards: what would have been sent, to whom, through what. */
export function outboxList(items) {
  if (!items.length) return h('p', { class: 'muted' }, 'Nothing would have been sent.');
  return h(
    'ul',
    { class: 'outbox' },
    items.map((m) =>
      h(
        'li',
        { class: 'card outbox-item', 'data-kind': m.kind },
        h('div', { class: 'step-head' }, h('strong', {}, m.kind), m.to ? ` to ${m.to}` : '', m.connection ? h('span', { class: 'meta' }, ` via ${m.connection}`) : null, m.test ? h('span', { class: 'tag' }, 'test') : null),
        h(
          'dl',
          { class: 'facts' },
          Object.entries(m.rendered && typeof m.rendered === 'object' ? m.rendered : { value: m.rendered })
            .filter(([k, v]) => k !== 'to' && v !== null && v !== undefined && v !== '')
            .map(([k, v]) => [h('dt', {}, k), h('dd', { class: 'pre' }, show(v))]),
        ),
        h('p', { class: 'meta' }, `Step ${m.step_id} · ${when(m.created_at)}`),
      ),
    ),
  );
}
