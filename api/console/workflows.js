// Workflows: the list with enable/disable toggles, runs and success rate
// (GET /v1/workflows/{id}/stats); each opens in the editor.

import { api, describe } from './api.js';
import { errorBox, h, heading, replace, toast } from './dom.js';
import { triggerText } from './templates.js';

/** #/workflows. */
export async function render(main) {
  const { workflows } = await api('GET', '/v1/workflows?limit=200');
  const status = h('div', { 'aria-live': 'polite' });
  const rows = workflows.map((w) => {
    const toggle = h('input', { type: 'checkbox', role: 'switch', checked: w.enabled, 'aria-label': `Enabled: ${w.name}` });
    toggle.addEventListener('change', async () => {
      try {
        await api('POST', `/v1/workflows/${encodeURIComponent(w.id)}/${toggle.checked ? 'enable' : 'disable'}`);
        toast(`${w.name} is ${toggle.checked ? 'on' : 'off'}.`);
      } catch (e) {
        toggle.checked = !toggle.checked;
        replace(status, errorBox(describe(e), e.details));
      }
    });
    const runs = h('td', { 'data-label': 'Runs' }, '…');
    const rate = h('td', { 'data-label': 'Success' }, '…');
    api('GET', `/v1/workflows/${encodeURIComponent(w.id)}/stats`)
      .then((s) => {
        runs.textContent = String(s.runs.total);
        rate.textContent = s.success_rate === null || s.success_rate === undefined ? '—' : `${Math.round(s.success_rate * 100)}%`;
      })
      .catch(() => {
        runs.textContent = '?';
        rate.textContent = '?';
      });
    return h(
      'tr',
      { 'data-workflow': w.id },
      h('td', {}, h('a', { href: `#/workflows/${encodeURIComponent(w.id)}`, class: 'workflow-name' }, w.name)),
      h('td', { 'data-label': 'Trigger' }, triggerText(w.trigger)),
      h('td', { 'data-label': 'Version' }, String(w.version)),
      h('td', { 'data-label': 'On' }, h('label', { class: 'switch' }, toggle, ' on')),
      runs,
      rate,
      h('td', {}, h('a', { href: `#/runs?workflow_id=${encodeURIComponent(w.id)}` }, 'Runs')),
    );
  });
  replace(
    main,
    heading('Workflows', h('a', { href: '#/workflows/new', class: 'button primary', id: 'new-workflow' }, 'New workflow')),
    status,
    workflows.length
      ? h('table', { class: 'table' }, h('thead', {}, h('tr', {}, ['Name', 'Trigger', 'Version', 'On', 'Runs', 'Success', ''].map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, rows))
      : h('p', { class: 'muted' }, 'No workflows yet: start from a template, or build one.'),
  );
}
