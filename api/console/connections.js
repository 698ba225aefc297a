// Connections: the account's vendor credentials, listed without secrets (the API never returns
// them), created (credentials sent once, then sealed), and the sandbox toggled.

import { api, describe } from './api.js';
import { errorBox, field, h, heading, replace, toast, when } from './dom.js';

/** #/connections. */
export async function render(main) {
  const [{ connections }, { actions }] = await Promise.all([api('GET', '/v1/connections?limit=200'), api('GET', '/v1/actions')]);
  const providers = [...new Set(actions.flatMap((a) => a.providers))].sort();
  const status = h('div', { 'aria-live': 'polite' });

  const rows = connections.map((c) => {
    const toggle = h('input', { type: 'checkbox', role: 'switch', checked: c.sandbox, 'aria-label': `Sandbox for ${c.name}` });
    toggle.addEventListener('change', async () => {
      try {
        await api('PATCH', `/v1/connections/${encodeURIComponent(c.id)}`, { sandbox: toggle.checked });
        toast(`${c.name}: sandbox ${toggle.checked ? 'on' : 'off'}.`);
      } catch (e) {
        toggle.checked = !toggle.checked;
        replace(status, errorBox(describe(e), e.details));
      }
    });
    return h(
      'tr',
      {},
      h('td', {}, c.name),
      h('td', { 'data-label': 'Provider' }, c.provider),
      h('td', { 'data-label': 'Sandbox' }, h('label', { class: 'switch' }, toggle, ' sandbox')),
      h('td', { 'data-label': 'Created' }, when(c.created_at)),
    );
  });

  const provider = h('input', { type: 'text', name: 'provider', list: 'providers', required: true, autocomplete: 'off' });
  const name = h('input', { type: 'text', name: 'name', required: true, autocomplete: 'off' });
  const sandbox = h('input', { type: 'checkbox', name: 'sandbox', checked: true });
  const credentials = h('textarea', { name: 'credentials', rows: 4, class: 'code', spellcheck: 'false', placeholder: '{"account_sid": "…", "auth_token": "…"}' });
  const form = h(
    'form',
    {
      class: 'card',
      id: 'new-connection',
      onsubmit: async (e) => {
        e.preventDefault();
        const body = { provider: provider.value.trim(), name: name.value.trim(), sandbox: sandbox.checked };
        if (credentials.value.trim()) {
          try {
            body.credentials = JSON.parse(credentials.value);
          } catch (err) {
            replace(status, errorBox(`The credentials are not valid JSON: ${err.message}`));
            return;
          }
        }
        try {
          await api('POST', '/v1/connections', body);
          credentials.value = '';
          toast(`Connection ${body.name} created.`);
          await render(main);
        } catch (err) {
          replace(status, errorBox(describe(err), err.details));
        }
      },
    },
    h('h2', {}, 'New connection'),
    h('datalist', { id: 'providers' }, providers.map((p) => h('option', { value: p }))),
    field('Provider', provider, `One of: ${providers.join(', ')}.`, { required: true }),
    field('Name', name, 'Steps pick it by this name.', { required: true }),
    h('div', { class: 'field' }, h('label', { class: 'switch' }, sandbox, ' Sandbox: sends go to the outbox, nothing reaches a vendor (no credentials needed)')),
    field('Credentials (JSON)', credentials, 'Sent once and sealed on the server; never shown again. Not needed for a sandbox connection.'),
    h('button', { type: 'submit', class: 'primary' }, 'Create connection'),
  );

  replace(
    main,
    heading('Connections'),
    h('p', { class: 'muted' }, 'Credentials are never shown: the API does not return them.'),
    status,
    connections.length
      ? h('table', { class: 'table' }, h('thead', {}, h('tr', {}, ['Name', 'Provider', 'Sandbox', 'Created'].map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, rows))
      : h('p', { class: 'muted' }, 'No connections yet.'),
    form,
  );
}
