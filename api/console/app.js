// The console's shell: the key, the navigation and a hash router (#/page/…) that renders one
// page module at a time into <main>. Pages get the route and return an optional cleanup
// function (e.g. to close a live event stream).

import { api, describe, forgetKey, getKey, setKey } from './api.js';
import { errorBox, field, h, heading, replace, toast } from './dom.js';
import * as templates from './templates.js';
import * as workflows from './workflows.js';
import * as editor from './editor.js';
import * as runs from './runs.js';
import * as outbox from './outbox.js';
import * as connections from './connections.js';
import * as usage from './usage.js';
import * as calls from './calls.js';

const main = document.getElementById('main');
let cleanup = null;

/** Page by the route's first part; the editor takes #/workflows/<id>. */
function pageOf(parts) {
  switch (parts[0]) {
    case 'templates':
      return templates;
    case 'workflows':
      return parts.length > 1 ? editor : workflows;
    case 'runs':
      return runs;
    case 'outbox':
      return outbox;
    case 'connections':
      return connections;
    case 'usage':
      return usage;
    case 'calls':
      return calls;
    default:
      return null;
  }
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query) };
}

async function route() {
  if (cleanup) {
    try {
      cleanup();
    } catch (_) {
      // a page's cleanup failing must not stop navigation
    }
    cleanup = null;
  }
  const r = parseHash();
  document.body.classList.toggle('signed-out', !getKey());
  if (!getKey()) {
    renderKey();
    return;
  }
  const page = pageOf(r.parts);
  if (!page) {
    location.replace('#/templates');
    return;
  }
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.page === r.parts[0]) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  closeMenu();
  replace(main, h('p', { class: 'muted' }, 'Loading…'));
  try {
    const result = await page.render(main, r);
    if (typeof result === 'function') cleanup = result;
  } catch (e) {
    if (e && e.status === 401) {
      // The key was revoked or mistyped: ask for one again.
      forgetKey();
      document.body.classList.add('signed-out');
      renderKey(describe(e));
      return;
    }
    replace(main, heading('Something went wrong'), errorBox(describe(e), e.details || []));
  }
  main.focus({ preventScroll: true });
}

/** The key entry page. */
function renderKey(problem) {
  const input = h('input', { type: 'password', name: 'api-key', autocomplete: 'off', spellcheck: 'false', required: true, placeholder: 'sk_…' });
  const status = h('div', { 'aria-live': 'polite' }, problem ? errorBox(problem) : null);
  const form = h(
    'form',
    {
      class: 'card narrow',
      id: 'key-form',
      onsubmit: async (e) => {
        e.preventDefault();
        const key = input.value.trim();
        if (!key) return;
        setKey(key);
        try {
          const account = await api('GET', '/v1/account');
          toast(`Signed in to ${account.name}`);
          if (!location.hash || location.hash === '#/' || location.hash.startsWith('#/key')) location.hash = '#/templates';
          else route();
        } catch (err) {
          forgetKey();
          replace(status, errorBox(describe(err)));
          input.focus();
        }
      },
    },
    h('h1', {}, 'Open the console'),
    h('p', {}, 'Paste an API key of your account. It stays in this browser tab only (session storage) and is sent to this server as a bearer token.'),
    field('API key', input, 'The sk_… key your administrator gave you.', { required: true }),
    h('button', { type: 'submit', class: 'primary' }, 'Continue'),
    status,
  );
  replace(main, form);
  input.focus();
}

function closeMenu() {
  document.getElementById('nav').classList.remove('open');
  document.getElementById('menu-toggle').setAttribute('aria-expanded', 'false');
}

document.getElementById('menu-toggle').addEventListener('click', (e) => {
  const nav = document.getElementById('nav');
  const open = !nav.classList.contains('open');
  nav.classList.toggle('open', open);
  e.currentTarget.setAttribute('aria-expanded', String(open));
});

document.getElementById('forget-key').addEventListener('click', () => {
  forgetKey();
  toast('The key is forgotten.');
  route();
});

window.addEventListener('hashchange', route);
route();
