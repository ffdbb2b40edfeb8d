// Draws a flowchart as SVG: boxes per node, solid connectors as lines with arrows, dotted
// (context-only) connectors dashed, loops routed around the side, the decision's fallback
// connector badged `Fallback`. `update` recolours nodes by their latest status and sets their
// counters (runs, retries, `Routed: N`, warnings) without redrawing the graph.

import { h, s } from './dom.js';
import { NODE_H, NODE_W, layout } from './layout.js';

function clip(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

function edgePath(a, b, isBack) {
  const ax = a.x + NODE_W / 2;
  const bx = b.x + NODE_W / 2;
  if (isBack || b.y <= a.y) {
    // Around the right side: out of the source's right, into the target's right.
    const sx = a.x + NODE_W;
    const sy = a.y + NODE_H / 2;
    const tx = b.x + NODE_W;
    const ty = b.y + NODE_H / 2;
    const bulge = Math.max(sx, tx) + 40 + Math.min(200, Math.abs(sy - ty) / 8);
    return { d: `M${sx},${sy} C${bulge},${sy} ${bulge},${ty} ${tx + 2},${ty}`, mx: bulge - 10, my: (sy + ty) / 2 };
  }
  const sy = a.y + NODE_H;
  const ty = b.y - 2;
  const dy = (ty - sy) / 2;
  return { d: `M${ax},${sy} C${ax},${sy + dy} ${bx},${ty - dy} ${bx},${ty}`, mx: (ax + bx) / 2, my: (sy + ty) / 2 };
}

/**
 * Draws `definition` into `container`; `onSelect(nodeId)` is called when a node is clicked or
 * activated with Enter/Space. Returns { svg, update(nodeStates), select(nodeId) }.
 */
export function drawGraph(container, definition, { onSelect } = {}) {
  const { boxes, back, width, height, connectors } = layout(definition);
  const types = new Map((definition.nodes || []).map((n) => [n.id, n]));
  const fallbackOf = new Map();
  for (const n of definition.nodes || []) {
    if (n.type === 'decision' && n.no_match && n.no_match.policy === 'fallback' && n.no_match.connector) {
      fallbackOf.set(n.no_match.connector, n.id);
    }
  }
  const svg = s('svg', { class: 'graph', width, height, viewBox: `0 0 ${width} ${height}`, role: 'group', 'aria-label': `Flowchart ${definition.name || ''}: ${boxes.size} nodes` },
    s('defs', {},
      s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
        s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow' }))));
  const edges = s('g', { class: 'edges' });
  const labels = s('g', { class: 'edge-labels' });
  const edgeEls = new Map();
  for (const c of connectors) {
    const a = boxes.get(c.from);
    const b = boxes.get(c.to);
    const mode = c.mode || 'solid';
    const { d, mx, my } = edgePath(a, b, back.has(c.id));
    const path = s('path', { d, class: `edge ${mode}`, 'marker-end': 'url(#arrow)', dataset: { connector: c.id } },
      s('title', {}, `${c.id}: ${c.from} → ${c.to} (${mode})`));
    edges.append(path);
    edgeEls.set(c.id, path);
    const fromDecision = types.get(c.from) && types.get(c.from).type === 'decision';
    if (fallbackOf.has(c.id)) {
      labels.append(s('g', { class: 'fallback-badge', dataset: { connector: c.id } },
        s('rect', { x: mx - 32, y: my - 10, width: 64, height: 18, rx: 9 }),
        s('text', { x: mx, y: my + 3, 'text-anchor': 'middle' }, 'Fallback')));
    } else if (fromDecision) {
      labels.append(s('text', { x: mx, y: my - 4, class: 'edge-label', 'text-anchor': 'middle' }, clip(c.id, 18)));
    }
  }
  const nodesG = s('g', { class: 'nodes' });
  const nodeEls = new Map();
  for (const [id, box] of boxes) {
    const node = types.get(id);
    const counter = s('text', { x: NODE_W - 8, y: 15, class: 'counter', 'text-anchor': 'end' });
    const extra = s('text', { x: 10, y: NODE_H - 9, class: 'extra' });
    const warn = s('text', { x: NODE_W - 8, y: NODE_H - 9, class: 'warn', 'text-anchor': 'end' });
    const bad = s('text', { x: NODE_W - 8, y: NODE_H - 9, class: 'bad', 'text-anchor': 'end' });
    const g = s('g', { class: `node t-${node.type} st-none`, transform: `translate(${box.x},${box.y})`, tabindex: 0, role: 'button', 'aria-label': `${id} (${node.type})`, dataset: { node: id } },
      s('rect', { width: NODE_W, height: NODE_H, rx: node.type === 'decision' ? 14 : 6 }),
      s('text', { x: 10, y: 20, class: 'label' }, clip(id, 19)),
      s('text', { x: 10, y: 34, class: 'type' }, node.type),
      counter, extra, warn, bad,
      s('title', {}, `${id} (${node.type})`));
    const activate = () => onSelect && onSelect(id);
    g.addEventListener('click', activate);
    g.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); activate(); } });
    nodesG.append(g);
    nodeEls.set(id, { g, counter, extra, warn, bad, type: node.type });
  }
  svg.append(edges, labels, nodesG);
  container.replaceChildren(svg);

  let selected = null;
  return {
    svg,
    /** `states`: Map nodeId -> { status, runs, retries, routed, degraded, fallback, matched: [connector ids] } */
    update(states) {
      const fired = new Set();
      for (const [id, el] of nodeEls) {
        const st = states.get(id);
        const status = st ? st.status : 'none';
        el.g.setAttribute('class', `node t-${el.type} st-${status}${id === selected ? ' selected' : ''}${st && st.degraded ? ' degraded' : ''}`);
        el.g.dataset.status = status;
        el.g.setAttribute('aria-label', `${id} (${el.type}): ${st ? status : 'not run'}${st && st.runs > 1 ? `, ${st.runs} runs` : ''}`);
        el.counter.textContent = st && st.runs > 1 ? `×${st.runs}` : '';
        const bits = [];
        if (el.type === 'decision' && st) bits.push(`Routed: ${st.routed}`);
        if (st && st.retries) bits.push(`retries ${st.retries}`);
        el.extra.textContent = bits.join(' · ');
        el.warn.textContent = st && (st.degraded || st.fallback) ? '⚠' : '';
        if (st) for (const c of st.matched || []) fired.add(c);
      }
      for (const [id, path] of edgeEls) path.classList.toggle('fired', fired.has(id));
    },
    /** Marks nodes and connectors with validation problems (Maps id -> problems): a red
     *  outline and `✕N` on a node, a red line on a connector, the messages in their titles. */
    problems(byNode, byConnector) {
      for (const [id, el] of nodeEls) {
        const list = byNode.get(id) || [];
        el.g.classList.toggle('invalid', list.length > 0);
        el.g.dataset.problems = String(list.length);
        el.bad.textContent = list.length ? `✕${list.length}` : '';
        if (list.length) el.g.setAttribute('aria-label', `${id} (${el.type}): ${list.length} problem${list.length === 1 ? '' : 's'}: ${list.map((e) => e.message).join('; ')}`);
      }
      for (const [id, path] of edgeEls) {
        const list = byConnector.get(id) || [];
        path.classList.toggle('invalid', list.length > 0);
        if (list.length) path.append(s('title', {}, list.map((e) => e.message).join('\n')));
      }
    },
    select(id) {
      selected = id;
      for (const [nid, el] of nodeEls) el.g.classList.toggle('selected', nid === id);
    },
    focus(id) {
      const el = nodeEls.get(id);
      if (el) el.g.focus();
    },
  };
}
