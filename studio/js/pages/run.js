// One run: its flowchart as a live graph, the node inspector, operator controls, the timeline
// of transitions and operator actions, and the claims over the run.
// Data: GET /v1/runs/{id} (run_detail), the definition from the run's first ledger event
// (GET /v1/runs/{id}/events?limit=1: RunStarted.definition), live events of the run over SSE,
// GET /v1/runs/{id}/claims.

import { api, qs } from '../api.js';
import { replaceUrl } from '../app.js';
import { badge, coalesce, facts, h } from '../dom.js';
import { duration, shortId, time } from '../format.js';
import { drawGraph } from '../graph.js';
import { subscribe } from '../live.js';
import { runControls } from './controls.js';
import { renderInspector } from './inspector.js';

/** Latest status and counters per node, from the node runs in scheduling order. */
export function nodeStates(detail) {
  const states = new Map();
  for (const n of detail.node_runs) {
    let st = states.get(n.node_id);
    if (!st) { st = { status: 'none', runs: 0, retries: 0, routed: 0, degraded: false, fallback: false, matched: [] }; states.set(n.node_id, st); }
    st.status = n.status;
    st.runs += 1;
    if (n.attempt > 1) st.retries += 1;
    st.degraded = n.degraded;
    if (n.fallback_used) st.fallback = true;
    if (n.routing) {
      st.routed += 1;
      st.matched.push(...(n.routing.matched_connectors || []));
      if (n.routing.no_match && n.routing.fallback_connector) { st.fallback = true; st.matched.push(n.routing.fallback_connector); }
    }
  }
  return states;
}

function timeline(detail) {
  const byRun = new Map(detail.node_runs.map((n) => [n.node_run_id, n]));
  const rows = detail.timeline.map((t) => {
    const n = t.node_run_id ? byRun.get(t.node_run_id) : null;
    const warn = [];
    if (n && n.degraded && /Succeeded|Skipped/.test(t.event_type)) warn.push('degraded');
    if (n && n.fallback_used && /Succeeded/.test(t.event_type)) warn.push('fallback result');
    if (n && n.routing && n.routing.no_match && n.routing.fallback_connector && /Succeeded/.test(t.event_type)) warn.push(`fallback route ${n.routing.fallback_connector}`);
    return h('tr', { class: `cat-${t.category}${warn.length ? ' warned' : ''}` },
      h('td', {}, String(t.stream_version)),
      h('td', {}, h('time', { datetime: t.recorded_at }, time(t.recorded_at))),
      h('td', {}, t.event_type),
      h('td', {}, t.node_id ? `${t.node_id}${t.attempt > 1 ? ` (attempt ${t.attempt})` : ''}` : ''),
      h('td', {}, t.actor ? `${t.actor}${t.reason ? `: ${t.reason}` : ''}` : ''),
      h('td', {}, t.detail, warn.map((w) => h('span', { class: 'warn-chip' }, `⚠ ${w}`))));
  });
  return h('div', { class: 'table-wrap timeline-wrap' }, h('table', { class: 'timeline' },
    h('caption', { class: 'sr-only' }, 'Timeline'),
    h('thead', {}, h('tr', {}, ['#', 'When', 'Event', 'Node', 'Operator', 'Detail'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows)));
}

function claimsTable(items) {
  if (!items.length) return h('p', { class: 'muted' }, 'No claims registered.');
  return h('table', { class: 'claims' },
    h('thead', {}, h('tr', {}, ['Claim', 'Severity', 'Status', 'Violations'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, items.map((c) => h('tr', {}, h('td', {}, h('strong', {}, c.id), h('br'), h('span', { class: 'small' }, c.statement)), h('td', {}, c.severity), h('td', {}, badge(c.status)), h('td', {}, String(c.violations ?? 0))))));
}

export async function runPage({ main, params, query, alive }) {
  const runId = params[0];
  const [detail0, first] = await Promise.all([
    api(`/v1/runs/${encodeURIComponent(runId)}`),
    api(`/v1/runs/${encodeURIComponent(runId)}/events?limit=1`),
  ]);
  if (!alive()) return null;
  let detail = detail0;
  const started = first.items && first.items[0];
  const definition = (started && started.payload && started.payload.definition) || { nodes: [], connectors: [] };

  const head = h('div', { class: 'run-head' });
  const controlsSlot = h('div');
  const graphBox = h('div', { class: 'graph-box', id: 'graph' });
  const inspector = h('aside', { class: 'inspector card', id: 'inspector', 'aria-labelledby': 'inspector-title', tabindex: -1 },
    h('h2', { id: 'inspector-title' }, 'Inspector'), h('p', { class: 'muted' }, 'Select a node (click, or Tab to it and press Enter).'));
  const timelineSlot = h('section', { 'aria-labelledby': 'timeline-title' });
  const claimsSlot = h('section', { 'aria-labelledby': 'claims-title' }, h('h2', { id: 'claims-title' }, 'Claims of this run'), h('p', { class: 'muted' }, 'Loading…'));
  const graphTime = h('p', { class: 'small muted', id: 'graph-time' });
  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: '/runs' }, '← Runs')),
    head, controlsSlot,
    h('div', { class: 'run-grid' },
      h('section', { class: 'card graph-card', 'aria-labelledby': 'graph-title' },
        h('h2', { id: 'graph-title' }, 'Flowchart ', h('span', { class: 'legend' },
          h('span', { class: 'lg solid' }, 'solid'), h('span', { class: 'lg dotted' }, 'dotted (context)'))),
        graphBox, graphTime),
      inspector),
    timelineSlot, claimsSlot);

  let selected = query.get('node');
  let chosenRun = query.get('node_run');

  const t0 = performance.now();
  const graph = drawGraph(graphBox, definition, { onSelect: (id) => { selected = id; chosenRun = null; syncUrl(); showInspector(); inspector.focus(); } });
  graph.update(nodeStates(detail));
  const drawn = performance.now() - t0;
  graphTime.textContent = `${definition.nodes.length} nodes drawn in ${drawn.toFixed(0)} ms`;
  graphBox.dataset.drawMs = drawn.toFixed(1);

  function syncUrl() {
    replaceUrl(`/runs/${runId}${qs({ node: selected, node_run: chosenRun })}`);
  }

  function showHead() {
    const r = detail.run;
    head.replaceChildren(...[
      h('h1', {}, 'Run ', h('span', { class: 'mono' }, shortId(r.run_id)), ' ', badge(r.status)),
      facts([
        ['Run id', h('span', { class: 'mono' }, r.run_id)],
        ['Flowchart', `${r.flowchart_name}${r.flowchart_version ? ` v${r.flowchart_version}` : ' (inline)'}`],
        ['Started', time(r.started_at)],
        ['Ended', time(r.ended_at)],
        ['Duration', duration(r.duration_ms)],
        ['Actor', r.actor],
        ['Node runs', String(r.node_run_count)],
        detail.parent ? ['Parent run', h('a', { href: `/runs/${detail.parent.run_id}` }, shortId(detail.parent.run_id))] : null,
        detail.forked_from ? ['Forked from', h('span', {}, h('a', { href: `/runs/${detail.forked_from.run_id}`, 'data-link': 'forked-from' }, shortId(detail.forked_from.run_id)),
          ` at node ${detail.forked_from.from_node}, version ${detail.forked_from.stream_version}`)] : null,
        detail.forks && detail.forks.length ? ['Forks', h('span', {}, ...detail.forks.flatMap((f, i) => [i ? ', ' : '',
          h('a', { href: `/runs/${f.run_id}`, 'data-link': 'fork' }, shortId(f.run_id)), ` (from ${f.from_node})`]))] : null,
      ]),
      detail.error ? h('p', { class: 'error', role: 'alert' }, `Failed: ${detail.error.code}: ${detail.error.message}`) : null,
      detail.warnings && detail.warnings.length ? h('ul', { class: 'warnings', 'aria-label': 'Run warnings' },
        detail.warnings.map((w) => h('li', {}, `⚠ ${w.node_id}: ${w.code}: ${w.message}`))) : null,
    ].filter(Boolean));
    controlsSlot.replaceChildren(runControls(runId, r.status, reload));
  }

  function showInspector() {
    graph.select(selected);
    if (!selected) return;
    renderInspector(inspector, {
      runId, nodeId: selected, detail, definition, chosen: chosenRun,
      onChoose: (id) => { chosenRun = id; syncUrl(); showInspector(); },
      after: reload,
    });
  }

  function showTimeline() {
    timelineSlot.replaceChildren(h('h2', { id: 'timeline-title' }, `Timeline (${detail.timeline.length})`), timeline(detail));
  }

  async function loadClaims() {
    try {
      const c = await api(`/v1/runs/${encodeURIComponent(runId)}/claims`);
      if (alive()) claimsSlot.replaceChildren(h('h2', { id: 'claims-title' }, 'Claims of this run'), claimsTable(c.items || []));
    } catch (e) {
      if (alive()) claimsSlot.replaceChildren(h('h2', { id: 'claims-title' }, 'Claims of this run'), h('p', { class: 'error' }, e.message));
    }
  }

  async function reload(minVersion) {
    try {
      const next = await api(`/v1/runs/${encodeURIComponent(runId)}${qs({ min_version: minVersion })}`);
      if (!alive()) return;
      detail = next;
      graph.update(nodeStates(detail));
      showHead();
      showInspector();
      showTimeline();
    } catch (e) {
      // A live refresh that fails keeps what is shown; the next event tries again.
      if (minVersion !== undefined) throw e;
    }
  }

  showHead();
  showTimeline();
  showInspector();
  loadClaims();
  // Each refresh reads the run detail at least at the newest version an event announced, so a
  // live event never shows an older state than itself.
  let seenVersion = 0;
  const refresh = coalesce(() => reload(seenVersion || undefined).catch(() => {}), 300);
  const refreshClaims = coalesce(() => loadClaims(), 2000);
  const stop = subscribe({ runId, onOpen: refresh }, (ev) => {
    if (ev.stream_id === `run-${runId}` && ev.stream_version > seenVersion) seenVersion = ev.stream_version;
    refresh();
    refreshClaims();
  });
  return { dispose: stop };
}
