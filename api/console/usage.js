// Usage: the plan and its tokens (GET /v1/account), a chart by day and unit drawn as inline SVG
// (GET /v1/usage?group_by=day), and the CSV export fetched with the key.

import { api, describe, download } from './api.js';
import { errorBox, h, heading, replace, svg } from './dom.js';

const COLORS = ['#2563eb', '#16a34a', '#d97706', '#9333ea', '#dc2626', '#0891b2', '#4d7c0f', '#be185d'];

function tokens(milli) {
  return (milli / 1000).toLocaleString(undefined, { maximumFractionDigits: 3 });
}

/** #/usage. */
export async function render(main) {
  const [account, usage] = await Promise.all([api('GET', '/v1/account'), api('GET', '/v1/usage?group_by=day')]);
  const status = h('div', { 'aria-live': 'polite' });
  const csv = h('button', { type: 'button', id: 'usage-csv' }, 'Download CSV');
  csv.addEventListener('click', async () => {
    try {
      await download('/v1/usage/export.csv', 'usage.csv');
    } catch (e) {
      replace(status, errorBox(describe(e)));
    }
  });
  replace(
    main,
    heading('Usage', csv),
    status,
    h(
      'dl',
      { class: 'facts card' },
      h('dt', {}, 'Account'),
      h('dd', {}, account.name),
      h('dt', {}, 'Plan'),
      h('dd', {}, account.plan),
      h('dt', {}, 'Period'),
      h('dd', {}, `${account.period.from} – ${account.period.to}`),
      h('dt', {}, 'Tokens used'),
      h('dd', {}, `${tokens(account.tokens_used_milli)} of ${tokens(account.tokens_included_milli)}`),
      h('dt', {}, 'Tokens left'),
      h('dd', {}, tokens(account.tokens_left_milli)),
    ),
    h('h2', {}, 'By day and unit'),
    chart(usage.rows),
  );
}

/** Bars per day, one per unit side by side, with a legend and a table for screen readers. */
export function chart(rows) {
  if (!rows.length) return h('p', { class: 'muted' }, 'No usage yet.');
  const days = [...new Set(rows.map((r) => r.day || r.key))].sort();
  const units = [...new Set(rows.map((r) => r.unit))].sort();
  const max = Math.max(...rows.map((r) => r.quantity), 1);
  const width = 640;
  const height = 240;
  const pad = { left: 40, bottom: 40, top: 10, right: 10 };
  const band = (width - pad.left - pad.right) / days.length;
  const bar = Math.min(48, Math.max(2, (band * 0.8) / units.length));
  const y = (q) => height - pad.bottom - (q / max) * (height - pad.top - pad.bottom);
  const shapes = [];
  shapes.push(svg('line', { x1: pad.left, y1: height - pad.bottom, x2: width - pad.right, y2: height - pad.bottom, class: 'axis' }));
  shapes.push(svg('text', { x: pad.left - 4, y: pad.top + 10, 'text-anchor': 'end', class: 'tick' }, String(max)));
  shapes.push(svg('text', { x: pad.left - 4, y: height - pad.bottom, 'text-anchor': 'end', class: 'tick' }, '0'));
  days.forEach((day, i) => {
    const x0 = pad.left + i * band + (band - bar * units.length) / 2;
    units.forEach((unit, j) => {
      const row = rows.find((r) => (r.day || r.key) === day && r.unit === unit);
      if (!row) return;
      const top = y(row.quantity);
      shapes.push(
        svg('rect', { x: x0 + j * bar, y: top, width: bar - 1, height: height - pad.bottom - top, fill: COLORS[j % COLORS.length], class: 'bar' }, svg('title', {}, `${day} · ${unit}: ${row.quantity}`)),
      );
    });
    shapes.push(svg('text', { x: pad.left + i * band + band / 2, y: height - pad.bottom + 16, 'text-anchor': 'middle', class: 'tick' }, day.slice(5)));
  });
  const legend = h(
    'ul',
    { class: 'legend' },
    units.map((u, j) => h('li', {}, svg('svg', { width: 12, height: 12, 'aria-hidden': 'true' }, svg('rect', { width: 12, height: 12, fill: COLORS[j % COLORS.length] })), ' ', u)),
  );
  const table = h(
    'table',
    { class: 'table compact' },
    h('caption', {}, 'Usage by day and unit'),
    h('thead', {}, h('tr', {}, ['Day', 'Unit', 'Quantity', 'Tokens'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, h('td', {}, r.day || r.key), h('td', {}, r.unit), h('td', {}, String(r.quantity)), h('td', {}, tokens(r.tokens_milli))))),
  );
  return h(
    'figure',
    { class: 'chart card' },
    svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'plot', role: 'img', 'aria-label': `Usage by day: ${units.join(', ')}`, id: 'usage-chart', preserveAspectRatio: 'xMidYMid meet' }, shapes),
    legend,
    h('details', {}, h('summary', {}, 'As a table'), table),
  );
}
