// The workflow as a graph: what kind each step is, what it says in a line, where it can go
// (next, branch arms, on_error, wait_for timeouts), and the SVG arrows of its gotos drawn
// beside the column of blocks.

import { svg, clear } from './dom.js';

/** The kind of a step: action, delay, branch, wait_for, set, end, for_each (or unknown). */
export function kindOf(step) {
  for (const k of ['action', 'delay', 'branch', 'wait_for', 'set', 'end', 'for_each']) if (step && Object.prototype.hasOwnProperty.call(step, k)) return k;
  return 'unknown';
}

/** What a block says about its step, in short lines. */
export function summary(step) {
  const kind = kindOf(step);
  const text = (v) => (typeof v === 'string' ? v : JSON.stringify(v));
  switch (kind) {
    case 'action': {
      const input = step.input && typeof step.input === 'object' ? step.input : {};
      const lines = [];
      for (const name of ['to', 'channel', 'url', 'title', 'subject', 'message', 'body', 'text']) {
        if (input[name] !== undefined && input[name] !== '') lines.push(`${name}: ${text(input[name])}`);
        if (lines.length >= 2) break;
      }
      if (step.connection) lines.push(`via ${step.connection}`);
      if (step.on_error) lines.push(`on error: ${text(step.on_error)}`);
      return lines;
    }
    case 'delay':
      if (typeof step.delay === 'string') return [`wait ${step.delay}`];
      if (step.delay && step.delay.for) return [`wait ${step.delay.for}`];
      if (step.delay && step.delay.until) return [`wait until ${step.delay.until}`];
      if (step.delay && step.delay.at) return [`wait until ${step.delay.at}${step.delay.timezone ? ' ' + step.delay.timezone : ''}`];
      return ['wait'];
    case 'branch':
      return (Array.isArray(step.branch) ? step.branch : []).map((arm) => (arm && arm.else !== undefined ? `else → ${arm.else}` : `if ${arm && arm.when} → ${arm && arm.goto}`));
    case 'wait_for': {
      const w = step.wait_for || {};
      return [`wait for ${w.event || '?'}${w.timeout ? ' (up to ' + w.timeout + ')' : ''}`, w.match ? `matching ${w.match}` : null].filter(Boolean);
    }
    case 'set':
      return Object.entries(step.set || {}).map(([k, v]) => `${k} = ${text(v)}`);
    case 'end':
      return ['end the run'];
    case 'for_each': {
      const f = step.for_each || {};
      const inner = Array.isArray(f.steps) ? f.steps : [];
      return [
        `for each ${f.as || 'item'} in ${text(f.items)}${f.concurrency ? ` (${f.concurrency} at once)` : ''}: one child run each`,
        ...inner.map((s) => `  ↳ ${s && s.id} · ${kindOf(s) === 'action' ? s.action : kindOf(s)}`),
      ];
    }
    default:
      return ['(not a step kind the console knows)'];
  }
}

/** Where a step can jump: [{label, to}] (to is a step id or "end"). */
export function gotos(step) {
  const out = [];
  const kind = kindOf(step);
  if (kind === 'branch' && Array.isArray(step.branch)) {
    for (const arm of step.branch) {
      if (!arm || typeof arm !== 'object') continue;
      if (arm.else !== undefined) out.push({ label: 'else', to: String(arm.else) });
      else if (arm.goto !== undefined) out.push({ label: 'if', to: String(arm.goto) });
    }
  }
  if (kind === 'wait_for' && step.wait_for && step.wait_for.on_timeout) out.push({ label: 'timeout', to: String(step.wait_for.on_timeout) });
  const onError = step.on_error;
  if (typeof onError === 'string' && onError.startsWith('goto ')) out.push({ label: 'error', to: onError.slice(5).trim() });
  if (onError && typeof onError === 'object' && onError.goto) out.push({ label: 'error', to: String(onError.goto) });
  return out;
}

/** Whether control can fall through to the next block. */
export function fallsThrough(step) {
  const kind = kindOf(step);
  if (kind === 'end') return false;
  if (kind === 'branch' && Array.isArray(step.branch) && step.branch.some((a) => a && a.else !== undefined)) return false;
  return true;
}

/**
 * Draws the goto arrows into `layer` (an <svg> over `canvas`): from the right edge of a block
 * to the right edge of its target (or the End node), each further right than the last.
 */
export function drawEdges(canvas, layer, steps) {
  clear(layer);
  const box = canvas.getBoundingClientRect();
  layer.setAttribute('width', String(canvas.scrollWidth));
  layer.setAttribute('height', String(canvas.scrollHeight));
  const defs = svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse' }, svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrow-head' })));
  layer.appendChild(defs);
  const blocks = [...canvas.querySelectorAll('.block')];
  const byId = new Map();
  blocks.forEach((el, i) => byId.set(steps[i] && steps[i].id, el));
  const endNode = canvas.querySelector('.end-node');
  let lane = 0;
  steps.forEach((step, i) => {
    const from = blocks[i];
    if (!from) return;
    for (const edge of gotos(step)) {
      const target = edge.to === 'end' ? endNode : byId.get(edge.to);
      const a = from.getBoundingClientRect();
      lane += 1;
      const x = a.right - box.left + 10 + lane * 12;
      const y1 = a.top - box.top + a.height / 2;
      if (!target) {
        // An unknown target: a dangling arrow marked as broken.
        layer.appendChild(svg('path', { d: `M ${a.right - box.left} ${y1} H ${x + 8}`, class: 'edge broken', 'marker-end': 'url(#arrow)' }, svg('title', {}, `${edge.label}: goto ${edge.to} (no such step)`)));
        layer.appendChild(svg('text', { x: x + 10, y: y1 + 4, class: 'edge-label broken' }, `? ${edge.to}`));
        continue;
      }
      const b = target.getBoundingClientRect();
      const y2 = b.top - box.top + Math.min(b.height / 2, 18);
      const x2 = b.right - box.left;
      layer.appendChild(
        svg('path', { d: `M ${a.right - box.left} ${y1} H ${x} V ${y2} H ${x2 + 2}`, class: `edge edge-${edge.label}`, 'marker-end': 'url(#arrow)' }, svg('title', {}, `${step.id} ${edge.label} → ${edge.to}`)),
      );
      layer.appendChild(svg('text', { x: x + 3, y: (y1 + y2) / 2, class: 'edge-label' }, edge.label));
    }
  });
}

const SCRIPT_KINDS = ['say', 'play', 'pause', 'gather', 'menu', 'branch', 'hours', 'record', 'dial', 'request', 'set', 'hangup'];

/**
 * A call script (`voice.call`/`voice.answer` input `script`) as lines: each node's id and kind,
 * what it says, and where a menu's keys lead.
 */
export function scriptLines(script) {
  if (!Array.isArray(script)) return [];
  return script.map((node, i) => {
    if (!node || typeof node !== 'object') return `#${i + 1} ?`;
    const kind = SCRIPT_KINDS.find((k) => k in node) || 'node';
    const body = node[kind];
    const name = node.id ? node.id : `#${i + 1}`;
    let what = '';
    if (typeof body === 'string') what = body.length > 90 ? body.slice(0, 87) + '…' : body;
    else if (body && typeof body === 'object') {
      what = String(body.prompt || body.say || body.text || body.url || body.number || '');
      if (what.length > 90) what = what.slice(0, 87) + '…';
      if (body.options && typeof body.options === 'object') {
        what += ` [${Object.entries(body.options)
          .map(([key, to]) => `${key} → ${typeof to === 'string' ? to : JSON.stringify(to)}`)
          .join(', ')}]`;
      }
    }
    return `${name} · ${kind}${what ? ': ' + what : ''}`;
  });
}
