// The node inspector of the run page: one node's runs, and for the chosen one its input
// context, output, error, routing decision (every evaluation with its reason), tool calls
// (provider, model, tokens, latency) and artifact, with the node's controls.

import { badge, facts, h, json } from '../dom.js';
import { duration, shortId, time } from '../format.js';
import { nodeControls } from './controls.js';

/** The input context the node run saw, rebuilt from the tokens it consumed (docs/flowchart.md). */
function inputContext(detail, nodeRun, definition) {
  const byId = new Map(detail.node_runs.map((n) => [n.node_run_id, n]));
  const modes = new Map((definition.connectors || []).map((c) => [c.id, c.mode || 'solid']));
  const upstream = {};
  let latest = null;
  for (const t of nodeRun.consumed_tokens || []) {
    const from = byId.get(t.from_node_run_id);
    if (!from || modes.get(t.connector_id) === 'dotted') continue;
    upstream[from.node_id] = { output: from.output, node_run_id: from.node_run_id, status: from.status };
    if (!latest || from.ordinal > latest.ordinal) latest = from;
  }
  return {
    inputs: detail.inputs,
    upstream,
    latest_upstream: latest ? { node_id: latest.node_id, output: latest.output, node_run_id: latest.node_run_id } : null,
    run: { id: detail.run.run_id, flowchart: detail.run.flowchart_name, version: detail.run.flowchart_version },
    node: { id: nodeRun.node_id, type: nodeRun.node_type, execution_index: nodeRun.execution_index },
  };
}

function routing(r) {
  if (!r) return null;
  return h('section', { class: 'routing' }, h('h3', {}, 'Routing decision'),
    facts([
      ['Matched', (r.matched_connectors || []).join(', ') || 'none'],
      ['Route key', r.route_key ?? '—'],
      r.no_match ? ['No match', r.fallback_connector ? h('span', { class: 'warn-text' }, `⚠ fallback connector ${r.fallback_connector}`) : 'the node failed'] : null,
    ]),
    h('table', { class: 'evaluations' },
      h('caption', {}, 'Evaluations'),
      h('thead', {}, h('tr', {}, ['Connector', 'Condition', 'Outcome', 'Reason'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, (r.evaluations || []).map((e) => h('tr', { class: `outcome-${e.outcome}` },
        h('td', {}, e.connector_id), h('td', { class: 'mono' }, e.condition), h('td', {}, e.outcome), h('td', {}, e.reason))))));
}

function toolCalls(calls) {
  if (!calls || !calls.length) return null;
  return h('section', {}, h('h3', {}, `Tool calls (${calls.length})`),
    h('div', { class: 'table-wrap' }, h('table', { class: 'tool-calls' },
      h('thead', {}, h('tr', {}, ['Tool', 'Outcome', 'Provider', 'Model', 'Tokens in/out', 'Latency', 'Error'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, calls.map((c) => h('tr', {},
        h('td', {}, `${c.tool}${c.operation ? ` ${c.operation}` : ''}`),
        h('td', {}, c.outcome),
        h('td', {}, c.provider ?? '—'),
        h('td', {}, c.model ?? '—'),
        h('td', {}, `${c.input_tokens ?? '—'} / ${c.output_tokens ?? '—'}`),
        h('td', {}, duration(c.latency_ms ?? c.duration_ms)),
        h('td', {}, c.error ? `${c.error.code}: ${c.error.message}` : '')))))));
}

function artifacts(list) {
  if (!list || !list.length) return h('p', { class: 'muted' }, 'No artifact yet (every node run ends with one).');
  return list.map((a) => h('details', { class: 'artifact' },
    h('summary', {}, h('a', { href: `/artifacts/${a.artifact_id}` }, `${a.artifact_type} ${shortId(a.artifact_id)}`), ` · contract v${a.contract_version}`),
    facts([['Content hash', h('span', { class: 'mono' }, a.content_hash)], ['Idempotency key', a.idempotency_key]]),
    json(a.payload)));
}

export function renderInspector(container, { runId, nodeId, detail, definition, chosen, onChoose, after }) {
  const node = (definition.nodes || []).find((n) => n.id === nodeId);
  const runs = detail.node_runs.filter((n) => n.node_id === nodeId);
  const latest = runs[runs.length - 1];
  const current = runs.find((n) => n.node_run_id === chosen) || latest;
  const parts = [h('h2', { id: 'inspector-title' }, `Node ${nodeId}`, h('span', { class: 'muted' }, ` ${node ? node.type : ''}`))];
  if (!runs.length) {
    parts.push(h('p', { class: 'muted' }, 'This node has not run.'));
  } else {
    const picker = h('select', { id: 'node-run-pick', 'aria-label': 'Node run' }, runs.map((n) => h('option', { value: n.node_run_id, selected: n === current },
      `#${n.ordinal} attempt ${n.attempt}, execution ${n.execution_index}: ${n.status}${n.invalidated ? ' (rewound)' : ''}`)));
    picker.addEventListener('change', () => onChoose(picker.value));
    parts.push(h('label', { for: 'node-run-pick' }, `Runs of this node (${runs.length})`), picker);
    const n = current;
    const warnings = [
      ...(n.warnings || []).map((w) => `${w.code}: ${w.message}`),
      n.degraded ? 'degraded' : null,
      n.fallback_used ? 'the output is a fallback result' : null,
      n.routing && n.routing.no_match && n.routing.fallback_connector ? `routed through the fallback connector ${n.routing.fallback_connector}` : null,
    ].filter(Boolean);
    parts.push(
      facts([
        ['Status', badge(n.status)],
        ['Node run', h('span', { class: 'mono' }, n.node_run_id)],
        ['Attempt', String(n.attempt)],
        ['Execution', String(n.execution_index)],
        ['Executor', [n.executor_class, n.executor].filter(Boolean).join(' / ') || '—'],
        ['Scheduled', time(n.scheduled_at)],
        ['Finished', time(n.finished_at)],
        ['Duration', duration(n.duration_ms)],
        n.retry_of ? ['Retry of', h('span', { class: 'mono' }, shortId(n.retry_of))] : null,
      ]),
      warnings.length ? h('ul', { class: 'warnings', 'aria-label': 'Warnings' }, warnings.map((w) => h('li', {}, `⚠ ${w}`))) : null,
      n.error ? h('section', { class: 'error-box', role: 'note' }, h('h3', {}, 'Error'), h('p', {}, `${n.error.code}: ${n.error.message}${n.error.retryable ? ' (retryable)' : ''}`), n.error.details ? json(n.error.details) : null) : null,
      h('section', {}, h('h3', {}, 'Output'), n.output === null || n.output === undefined ? h('p', { class: 'muted' }, 'No output.') : json(n.output)),
      routing(n.routing),
      toolCalls(n.tool_calls),
      h('section', {}, h('h3', {}, 'Artifact'), artifacts(n.artifacts)),
      h('details', { class: 'input-context' }, h('summary', {}, 'Input context'),
        h('p', { class: 'small muted' }, `Rebuilt from the tokens this node run consumed; the ledger records its hash ${n.input_context_hash || ''}.`),
        json(inputContext(detail, n, definition))),
    );
  }
  parts.push(nodeControls(runId, nodeId, latest, after, detail.run.status));
  container.replaceChildren(...parts.filter(Boolean));
}
