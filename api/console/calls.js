// Calls: today's dashboard (GET /v1/dashboard), kept live by the account's event stream
// (GET /v1/events/stream), and the call history (GET /v1/calls) with its CSV export.

import { api, describe, download, streamEvents } from './api.js';
import { badge, errorBox, h, heading, replace, when } from './dom.js';

/** #/calls. */
export async function render(main) {
  const controller = new AbortController();
  const board = h('div', { id: 'dashboard' });
  const list = h('div');
  const status = h('div', { 'aria-live': 'polite' });
  const live = h('span', { class: 'live' }, 'connecting…');
  const csv = h('button', { type: 'button' }, 'Download calls CSV');
  csv.addEventListener('click', async () => {
    try {
      await download('/v1/calls/export.csv', 'calls.csv');
    } catch (e) {
      replace(status, errorBox(describe(e)));
    }
  });

  const draw = async () => {
    const [d, { calls }] = await Promise.all([api('GET', '/v1/dashboard'), api('GET', '/v1/calls?limit=100')]);
    const pct = (x) => (x === null || x === undefined ? '—' : `${Math.round(x * 100)}%`);
    replace(
      board,
      h(
        'ul',
        { class: 'cards stats' },
        stat('Active calls', d.active_calls),
        stat('Calls today', d.calls_today),
        stat('Average call today', d.avg_call_duration_s === null || d.avg_call_duration_s === undefined ? '—' : `${Math.round(d.avg_call_duration_s)} s`),
        stat('Run success today', pct(d.success_rate_today)),
        stat('Runs under way', d.runs_active),
      ),
      d.top_workflows.length
        ? h('section', {}, h('h2', {}, 'Busiest workflows today'), h('ol', {}, d.top_workflows.map((w) => h('li', {}, h('a', { href: `#/workflows/${encodeURIComponent(w.workflow_id)}` }, w.name || w.workflow_id), ` — ${w.runs} runs`))))
        : null,
    );
    replace(
      list,
      h('h2', {}, 'Calls'),
      calls.length
        ? h(
            'table',
            { class: 'table' },
            h('thead', {}, h('tr', {}, ['Started', 'Direction', 'From', 'To', 'Status', 'Duration', 'Run'].map((t) => h('th', { scope: 'col' }, t)))),
            h(
              'tbody',
              {},
              calls.map((c) =>
                h(
                  'tr',
                  {},
                  h('td', {}, when(c.started_at)),
                  h('td', { 'data-label': 'Direction' }, c.direction),
                  h('td', { 'data-label': 'From' }, c.from),
                  h('td', { 'data-label': 'To' }, c.to),
                  h('td', { 'data-label': 'Status' }, badge(c.status), c.answered_by ? ` (${c.answered_by})` : ''),
                  h('td', { 'data-label': 'Duration' }, c.duration_s === null || c.duration_s === undefined ? '—' : `${c.duration_s} s`),
                  h('td', { 'data-label': 'Run' }, h('a', { href: `#/runs/${encodeURIComponent(c.run_id)}` }, c.run_id.slice(-8))),
                ),
              ),
            ),
          )
        : h('p', { class: 'muted' }, 'No calls yet (sandbox calls keep no history).'),
    );
  };

  replace(main, heading('Calls', live, csv), status, board, list);
  await draw();

  // Live: any change of the account's runs or calls redraws, at most once a second.
  let pending = null;
  const redraw = () => {
    if (pending) return;
    pending = setTimeout(async () => {
      pending = null;
      try {
        await draw();
      } catch (e) {
        replace(status, errorBox(describe(e)));
      }
    }, 1000);
  };
  live.textContent = 'live';
  live.className = 'live on';
  streamEvents('/v1/events/stream', redraw, controller.signal)
    .then(() => {
      live.textContent = 'stopped';
      live.className = 'live';
    })
    .catch((e) => {
      if (controller.signal.aborted) return;
      live.textContent = 'disconnected';
      live.className = 'live';
      replace(status, errorBox(`The live stream stopped: ${describe(e)}`));
    });
  return () => {
    clearTimeout(pending);
    controller.abort();
  };
}

function stat(label, value) {
  return h('li', { class: 'card stat' }, h('span', { class: 'stat-label' }, label), h('strong', { class: 'stat-value' }, String(value)));
}
