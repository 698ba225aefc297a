// The workflow editor: the definition as a graph of blocks, edited by drag and drop (pointer
// events, so mouse, touch and WebDriver all work) or by keyboard (palette buttons add a block
// after the selected one; Alt+↑/↓ move a block; Delete removes it), a properties panel built
// from each action's input schema (GET /v1/actions), saving as a new version, the server's 422
// problems shown on the block their path names (`steps[2].input.to` → block 3), and a YAML/JSON
// text view that saves as it is written.

import { api, describe } from './api.js';
import { badge, clear, errorBox, field, h, heading, replace, svg, toast } from './dom.js';
import { drawEdges, fallsThrough, kindOf, scriptLines, summary } from './graph.js';
import { renderProps } from './props.js';
import { outboxList, timeline } from './runs.js';
import { toYaml } from './yaml.js';

const CONTROL_BLOCKS = [
  { kind: 'delay', label: 'Delay', help: 'Wait for a while' },
  { kind: 'branch', label: 'Branch', help: 'Go one way or another' },
  { kind: 'wait_for', label: 'Wait for event', help: 'Wait for an event, with a timeout' },
  { kind: 'set', label: 'Set', help: 'Remember values as vars' },
  { kind: 'for_each', label: 'For each', help: 'Steps for each item, in child runs' },
  { kind: 'end', label: 'End', help: 'End the run' },
];

/** #/workflows/new or #/workflows/<id>. */
export async function render(main, route) {
  const id = route.parts[1] === 'new' ? null : route.parts[1];
  const [{ actions }, { connections }, view] = await Promise.all([
    api('GET', '/v1/actions'),
    api('GET', '/v1/connections?limit=200'),
    id ? api('GET', `/v1/workflows/${encodeURIComponent(id)}`) : Promise.resolve(null),
  ]);
  const ed = new Editor(main, actions, connections, view);
  ed.mount();
  return () => ed.destroy();
}

class Editor {
  constructor(main, actions, connections, view) {
    this.main = main;
    this.actions = Object.fromEntries(actions.map((a) => [a.kind, a]));
    this.actionList = actions;
    this.connections = connections;
    this.load(view);
    this.selected = null; // a step index, or null for the workflow itself
    this.problems = [];
    this.drag = null;
    this.onResize = () => this.drawEdges();
  }

  load(view) {
    this.view = view;
    this.doc = view
      ? { name: view.name, trigger: view.trigger, steps: Array.isArray(view.steps) ? view.steps : [], ...(view.params ? { params: view.params } : {}) }
      : { name: 'New workflow', trigger: { webhook: {} }, steps: [] };
  }

  destroy() {
    window.removeEventListener('resize', this.onResize);
  }

  mount() {
    this.status = h('div', { class: 'status-area', 'aria-live': 'polite' });
    this.canvas = h('div', { class: 'canvas', role: 'group', 'aria-label': 'Steps, in order', 'aria-describedby': 'canvas-keys', id: 'canvas' });
    this.keys = h('p', { class: 'help', id: 'canvas-keys' }, 'On a step: Enter selects it, Alt+↑ and Alt+↓ move it, Delete removes it, ↑ and ↓ go to the step above or below.');
    this.layer = svg('svg', { class: 'edges', 'aria-hidden': 'true' });
    this.canvasWrap = h('div', { class: 'canvas-wrap' }, this.layer, this.canvas);
    this.props = h('aside', { class: 'props', 'aria-label': 'Properties', id: 'props' });
    this.results = h('div', { class: 'test-results' });
    this.textArea = h('textarea', { class: 'code', rows: 18, spellcheck: 'false', id: 'text-view', 'aria-label': 'Definition as text' });
    this.format = h('select', { id: 'text-format', 'aria-label': 'Text format' }, h('option', { value: 'yaml' }, 'YAML'), h('option', { value: 'json' }, 'JSON'));
    this.format.addEventListener('change', () => this.fillText());
    this.head = h('div');
    this.hook = h('div');

    const palette = h(
      'aside',
      { class: 'palette', 'aria-label': 'Blocks' },
      h('h2', {}, 'Blocks'),
      h('p', { class: 'help' }, 'Drag a block onto the flow, or press it to add it after the selected step.'),
      h('h3', {}, 'Actions'),
      h('ul', {}, this.actionList.map((a) => h('li', {}, this.paletteItem(a.kind, a.kind, a.providers.length ? `via ${a.providers.join(', ')}` : '')))),
      h('h3', {}, 'Flow'),
      h('ul', {}, CONTROL_BLOCKS.map((b) => h('li', {}, this.paletteItem(b.kind, b.label, b.help)))),
    );

    const saveText = h('button', { type: 'button', id: 'save-text' }, 'Save text as a new version');
    saveText.addEventListener('click', () => this.saveText());
    const applyText = h('button', { type: 'button' }, 'Load the JSON into the graph');
    applyText.addEventListener('click', () => this.applyText());

    replace(
      this.main,
      this.head,
      this.status,
      h('div', { class: 'editor' }, palette, h('section', { class: 'flow', 'aria-label': 'Flow' }, h('h2', { class: 'sr-only' }, 'Flow'), this.canvasWrap, this.keys), this.props),
      this.hook,
      this.results,
      h('section', { class: 'card text-view' }, h('h2', {}, 'As text'), h('div', { class: 'actions' }, this.format, applyText, saveText), this.textArea),
    );
    window.addEventListener('resize', this.onResize);
    this.renderAll();
  }

  renderProps() {
    renderProps(this);
  }

  renderAll() {
    this.renderHead();
    this.renderCanvas();
    this.renderProps();
    this.renderHook();
    this.fillText();
  }

  renderHead() {
    const save = h('button', { type: 'button', class: 'primary', id: 'save-workflow' }, this.view ? 'Save new version' : 'Save');
    save.addEventListener('click', () => this.save());
    const test = h('button', { type: 'button', id: 'test-workflow', disabled: !this.view }, 'Test run');
    test.addEventListener('click', () => this.testRun());
    const del = this.view ? h('button', { type: 'button', class: 'danger', id: 'delete-workflow' }, 'Delete') : null;
    if (del) {
      del.addEventListener('click', async () => {
        if (!window.confirm(`Delete the workflow “${this.view.name}”? Its runs are kept.`)) return;
        try {
          await api('DELETE', `/v1/workflows/${encodeURIComponent(this.view.id)}`);
          toast(`Deleted ${this.view.name}.`);
          location.hash = '#/workflows';
        } catch (e) {
          replace(this.status, errorBox(describe(e), e.details));
        }
      });
    }
    replace(
      this.head,
      heading(this.doc.name || 'Workflow', save, test, this.view ? h('a', { class: 'button', href: `#/runs?workflow_id=${encodeURIComponent(this.view.id)}` }, 'Runs') : null, del),
      this.view ? h('p', { class: 'meta' }, `Version ${this.view.version} · `, badge(this.view.enabled ? 'enabled' : 'disabled')) : h('p', { class: 'meta' }, 'Not saved yet.'),
    );
  }

  // ---- Palette and drag and drop ----------------------------------------------------------

  paletteItem(kind, label, help) {
    const button = h('button', { type: 'button', class: `palette-item kind-${kindClass(kind)}`, 'data-kind': kind, 'aria-label': `Add ${label}` }, h('span', { class: 'pi-label' }, label), help ? h('span', { class: 'pi-help' }, help) : null);
    button.addEventListener('click', () => {
      if (this.suppressClick) return;
      const at = this.selected === null ? this.doc.steps.length : this.selected + 1;
      this.insert(kind, at);
    });
    this.draggable(button, () => ({ type: 'new', kind, label }));
    return button;
  }

  /** Pointer-driven dragging: a ghost follows the pointer; dropping on the flow inserts or moves. */
  draggable(el, what) {
    el.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return;
      // On touch screens a block is dragged by its grip only, so the flow still scrolls.
      if (e.pointerType === 'touch' && el.classList.contains('block') && !e.target.closest('.grip')) return;
      const start = { x: e.clientX, y: e.clientY };
      let dragging = false;
      let ghost = null;
      const move = (ev) => {
        if (!dragging && Math.hypot(ev.clientX - start.x, ev.clientY - start.y) < 5) return;
        if (!dragging) {
          dragging = true;
          const w = what();
          this.drag = w;
          ghost = h('div', { class: 'ghost', 'aria-hidden': 'true' }, w.label);
          document.body.appendChild(ghost);
          document.body.classList.add('dragging');
        }
        ghost.style.left = `${ev.clientX + 8}px`;
        ghost.style.top = `${ev.clientY + 8}px`;
        this.showDrop(this.dropIndex(ev.clientX, ev.clientY));
        ev.preventDefault();
      };
      const up = (ev) => {
        document.removeEventListener('pointermove', move);
        document.removeEventListener('pointerup', up);
        document.removeEventListener('pointercancel', up);
        if (!dragging) return;
        ghost.remove();
        document.body.classList.remove('dragging');
        // A cancelled pointer (the browser took the gesture) drops nothing.
        const at = ev.type === 'pointercancel' ? null : this.dropIndex(ev.clientX, ev.clientY);
        this.showDrop(null);
        const w = this.drag;
        this.drag = null;
        // The click that follows a drag must not add a second block.
        this.suppressClick = true;
        setTimeout(() => (this.suppressClick = false), 0);
        if (at === null) return;
        if (w.type === 'new') this.insert(w.kind, at);
        else this.moveTo(w.index, at);
      };
      document.addEventListener('pointermove', move);
      document.addEventListener('pointerup', up);
      document.addEventListener('pointercancel', up);
    });
  }

  /** Where a drop at (x, y) lands: an index in the steps, or null outside the flow. */
  dropIndex(x, y) {
    const box = this.canvasWrap.getBoundingClientRect();
    if (x < box.left - 40 || x > box.right + 40 || y < box.top - 40 || y > box.bottom + 40) return null;
    const blocks = [...this.canvas.querySelectorAll('.block')];
    let at = 0;
    for (const b of blocks) {
      const r = b.getBoundingClientRect();
      if (y > r.top + r.height / 2) at += 1;
    }
    return at;
  }

  showDrop(at) {
    for (const z of this.canvas.querySelectorAll('.drop-zone')) z.classList.toggle('active', at !== null && Number(z.dataset.at) === at);
  }

  // ---- Changes ------------------------------------------------------------------------------

  newStep(kind) {
    const base = kind.replace(/[^a-z0-9]+/gi, '_').replace(/^_|_$/g, '').toLowerCase() || 'step';
    let n = 1;
    const ids = new Set(this.doc.steps.map((s) => s.id));
    while (ids.has(`${base}_${n}`)) n += 1;
    const id = `${base}_${n}`;
    switch (kind) {
      case 'delay':
        return { id, delay: '1m' };
      case 'branch':
        return { id, branch: [{ when: 'true', goto: 'end' }] };
      case 'wait_for':
        return { id, wait_for: { event: 'lead.replied', timeout: '1d' } };
      case 'set':
        return { id, set: { value: '1' } };
      case 'end':
        return { id, end: {} };
      case 'for_each':
        return { id, for_each: { items: '{{ event.items }}', as: 'item', steps: [{ id: `${id}_log`, action: 'log', input: { message: '{{ item }}' } }] } };
      default: {
        const input = {};
        const schema = this.actions[kind] && this.actions[kind].input_schema;
        for (const name of (schema && schema.required) || []) input[name] = '';
        return { id, action: kind, input };
      }
    }
  }

  insert(kind, at) {
    const step = this.newStep(kind);
    this.doc.steps.splice(at, 0, step);
    this.shiftProblems();
    this.select(at);
    toast(`Added ${step.id}.`);
  }

  moveTo(from, at) {
    const [step] = this.doc.steps.splice(from, 1);
    const to = at > from ? at - 1 : at;
    this.doc.steps.splice(to, 0, step);
    this.shiftProblems();
    this.select(to);
  }

  remove(index) {
    const [step] = this.doc.steps.splice(index, 1);
    this.shiftProblems();
    this.selected = null;
    this.changed();
    this.renderProps();
    toast(`Removed ${step.id}.`);
  }

  /** Problems were for the saved order; after a structural change they may point elsewhere. */
  shiftProblems() {
    this.problems = this.problems.filter((p) => !/^steps\[/.test(p.path || ''));
  }

  select(index) {
    this.selected = index;
    this.changed();
    this.renderProps();
    const el = index === null ? null : this.canvas.querySelector(`.block[data-index="${index}"]`);
    if (el) el.focus();
  }

  /** The definition changed: redraw the flow and the text. */
  changed() {
    this.renderCanvas();
    this.fillText();
  }

  // ---- The flow -------------------------------------------------------------------------------

  renderCanvas() {
    const steps = this.doc.steps;
    const stepProblems = new Map();
    for (const p of this.problems) {
      const m = /^steps\[(\d+)\](.*)$/.exec(p.path || '');
      if (!m) continue;
      const i = Number(m[1]);
      if (!stepProblems.has(i)) stepProblems.set(i, []);
      stepProblems.get(i).push({ path: m[2].replace(/^\./, ''), message: p.message });
    }
    const items = [];
    const trigger = h('button', { type: 'button', class: `trigger-node${this.selected === null ? ' selected' : ''}`, id: 'trigger-node' }, h('span', { class: 'kind' }, 'Trigger'), ' ', triggerLine(this.doc.trigger));
    trigger.addEventListener('click', () => this.select(null));
    items.push(trigger);
    items.push(this.dropZone(0));
    steps.forEach((step, i) => {
      const kind = kindOf(step);
      const problems = stepProblems.get(i) || [];
      const label = kind === 'action' ? step.action : kind.replace('_', ' ');
      const block = h(
        'div',
        {
          class: `block kind-${kindClass(kind === 'action' ? step.action : kind)}${this.selected === i ? ' selected' : ''}${problems.length ? ' invalid' : ''}`,
          role: 'button',
          tabindex: '0',
          'aria-pressed': this.selected === i ? 'true' : 'false',
          'data-index': String(i),
          'data-step': step.id,
          'aria-label': `Step ${i + 1}: ${step.id}, ${label}${problems.length ? ', has problems' : ''}`,
        },
        h('div', { class: 'block-head' }, h('span', { class: 'grip', 'aria-hidden': 'true', title: 'Drag to move' }, '⠿'), h('span', { class: 'kind' }, label), h('span', { class: 'step-id' }, step.id)),
        h('ul', { class: 'block-lines' }, summary(step).map((line) => h('li', {}, line))),
        kind === 'action' && step.input && Array.isArray(step.input.script)
          ? h('ol', { class: 'script', 'aria-label': 'Call script' }, scriptLines(step.input.script).map((line) => h('li', {}, line)))
          : null,
        problems.length ? h('ul', { class: 'block-errors', role: 'alert' }, problems.map((p) => h('li', {}, p.path ? h('code', {}, p.path) : null, p.path ? ': ' : '', p.message))) : null,
      );
      block.addEventListener('click', () => {
        if (!this.suppressClick) this.select(i);
      });
      block.addEventListener('keydown', (e) => this.blockKey(e, i));
      this.draggable(block, () => ({ type: 'move', index: i, label: step.id }));
      items.push(block);
      items.push(fallsThrough(step) ? this.dropZone(i + 1) : this.dropZone(i + 1, true));
    });
    items.push(h('div', { class: 'end-node', 'aria-hidden': 'true' }, 'End'));
    replace(this.canvas, items);
    requestAnimationFrame(() => this.drawEdges());
  }

  dropZone(at, noArrow = false) {
    return h('div', { class: `drop-zone${noArrow ? ' no-arrow' : ''}`, 'data-at': String(at), 'aria-hidden': 'true' });
  }

  drawEdges() {
    if (this.canvas.isConnected) drawEdges(this.canvas, this.layer, this.doc.steps);
  }

  blockKey(e, i) {
    if (e.target !== e.currentTarget) return;
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      this.select(i);
    } else if (e.altKey && e.key === 'ArrowUp' && i > 0) {
      e.preventDefault();
      this.moveTo(i, i - 1);
    } else if (e.altKey && e.key === 'ArrowDown' && i < this.doc.steps.length - 1) {
      e.preventDefault();
      this.moveTo(i, i + 2);
    } else if (e.key === 'Delete') {
      e.preventDefault();
      this.remove(i);
    } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const next = this.canvas.querySelector(`.block[data-index="${i + (e.key === 'ArrowDown' ? 1 : -1)}"]`);
      if (next) next.focus();
    }
  }

  // ---- Webhook, test run, text ------------------------------------------------------------------

  renderHook() {
    clear(this.hook);
    if (!this.view || !this.view.webhook_url) return;
    const url = this.view.webhook_url;
    const body = h('textarea', { rows: 3, class: 'code', id: 'webhook-body', spellcheck: 'false' }, '{"name": "Ada"}');
    const fire = h('button', { type: 'button', id: 'fire-webhook' }, 'Fire webhook');
    const status = h('div', { 'aria-live': 'polite' });
    fire.addEventListener('click', async () => {
      try {
        // Same origin: the URL's path on this server (no key: the token in the URL is the secret).
        const path = new URL(url, location.href).pathname;
        const res = await fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: body.value });
        const answer = await res.json().catch(() => ({}));
        if (!res.ok) throw Object.assign(new Error((answer.error && answer.error.message) || res.statusText), { details: (answer.error && answer.error.details) || [] });
        toast('Webhook accepted: watching the run.');
        location.hash = `#/runs/${encodeURIComponent(answer.run_id)}`;
      } catch (e) {
        replace(status, errorBox(`The webhook was refused: ${e.message}`, e.details || []));
      }
    });
    replace(this.hook, h('section', { class: 'card' }, h('h2', {}, 'Webhook'), h('p', {}, 'POST JSON to ', h('code', { id: 'webhook-url' }, url)), field('Body', body), fire, status));
  }

  async testRun() {
    if (!this.view) return;
    let event = {};
    const bodyEl = document.getElementById('webhook-body');
    if (bodyEl) {
      try {
        event = JSON.parse(bodyEl.value);
      } catch (_) {
        event = {};
      }
    }
    replace(this.status, h('p', { class: 'muted' }, 'Running a test…'));
    try {
      const result = await api('POST', `/v1/workflows/${encodeURIComponent(this.view.id)}/test`, { event });
      replace(this.status, h('p', { class: 'ok' }, `Test run ${result.run.status}.`));
      replace(this.results, h('div', { class: 'two-col' }, h('section', {}, h('h3', {}, 'Timeline'), timeline(result.run)), h('section', {}, h('h3', {}, `Outbox preview (${result.outbox.length})`), outboxList(result.outbox))));
    } catch (e) {
      replace(this.status, errorBox(describe(e), e.details));
    }
  }

  definition() {
    const doc = { name: this.doc.name, trigger: this.doc.trigger, steps: this.doc.steps };
    if (this.doc.params) doc.params = this.doc.params;
    return doc;
  }

  fillText() {
    if (document.activeElement === this.textArea) return;
    const doc = this.definition();
    this.textArea.value = this.format.value === 'json' ? JSON.stringify(doc, null, 2) : toYaml(doc);
  }

  applyText() {
    if (this.format.value !== 'json') {
      replace(this.status, errorBox('YAML is read by the server: save the text, or switch to JSON to show it in the graph first.'));
      return;
    }
    try {
      const doc = JSON.parse(this.textArea.value);
      this.doc = { name: doc.name, trigger: doc.trigger, steps: Array.isArray(doc.steps) ? doc.steps : [], ...(doc.params ? { params: doc.params } : {}) };
      this.problems = [];
      this.selected = null;
      this.renderAll();
    } catch (e) {
      replace(this.status, errorBox(`The text is not valid JSON: ${e.message}`));
    }
  }

  async save() {
    await this.send(this.definition(), 'application/json');
  }

  async saveText() {
    const yaml = this.format.value === 'yaml';
    await this.send(this.textArea.value, yaml ? 'application/yaml' : 'application/json');
  }

  async send(body, contentType) {
    replace(this.status, h('p', { class: 'muted' }, 'Saving…'));
    try {
      const saved = this.view
        ? await api('PUT', `/v1/workflows/${encodeURIComponent(this.view.id)}`, body, { contentType })
        : await api('POST', '/v1/workflows', body, { contentType });
      const created = !this.view;
      this.problems = [];
      this.load(saved);
      replace(this.status, h('p', { class: 'ok', id: 'saved' }, `Saved: version ${saved.version}.`));
      toast(`Saved ${saved.name}, version ${saved.version}.`);
      if (created) history.replaceState(null, '', `#/workflows/${encodeURIComponent(saved.id)}`);
      this.textArea.blur();
      this.renderAll();
    } catch (e) {
      this.problems = e.details || [];
      const onSteps = this.problems.filter((p) => /^steps\[/.test(p.path || '')).length;
      replace(this.status, errorBox(`${describe(e)}${onSteps ? ` — ${onSteps} on the blocks marked below` : ''}`, this.problems));
      this.renderCanvas();
      this.renderProps();
    }
  }
}


function kindClass(kind) {
  return String(kind).replace(/[^a-z0-9]+/gi, '-');
}

function triggerLine(trigger) {
  if (!trigger || typeof trigger !== 'object') return 'manual';
  if (trigger.event) return `event ${trigger.event}`;
  if (trigger.webhook) return 'webhook';
  if (trigger.schedule) return `schedule ${trigger.schedule.cron || ''}`;
  if (trigger.call) return 'phone call';
  return 'manual';
}
