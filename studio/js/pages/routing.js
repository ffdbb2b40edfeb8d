// The routing inspector of a flowchart (read-only): per node its fan-in preset and the number
// of solid parents it waits for, per decision its no-match policy (fallback connector or fail),
// and the validation problems of `POST /v1/flowcharts/validate` as chips with counts, placed on
// the node or connector their path names (`nodes[3].fan_in` -> the fourth node).

import { api } from '../api.js';
import { h } from '../dom.js';

/** Validates `definition` (an object, or YAML/JSON text) on the server: { valid, errors }. */
export function validate(definition) {
  return api('/v1/flowcharts/validate', { method: 'POST', body: { definition } });
}

/** Groups problems by the node and connector id their path points at (when `definition` is an
 *  object); the rest (document-level, or paths into text) stay in `other`. */
export function placeProblems(definition, errors) {
  const nodes = (definition && Array.isArray(definition.nodes)) ? definition.nodes : [];
  const connectors = (definition && Array.isArray(definition.connectors)) ? definition.connectors : [];
  const byNode = new Map();
  const byConnector = new Map();
  const other = [];
  const add = (map, id, e) => map.set(id, [...(map.get(id) || []), e]);
  for (const e of errors || []) {
    const m = /^(nodes|connectors)\[(\d+)\]/.exec(e.path || '');
    const item = m && (m[1] === 'nodes' ? nodes : connectors)[Number(m[2])];
    const id = item && typeof item.id === 'string' ? item.id : null;
    if (id && m[1] === 'nodes') add(byNode, id, e);
    else if (id) add(byConnector, id, e);
    else other.push(e);
  }
  return { byNode, byConnector, other };
}

function fanIn(node, parents) {
  const f = node.fan_in === undefined ? 'all' : node.fan_in;
  if (f === 'all') return { preset: 'all', waits: parents };
  if (f === 'any') return { preset: 'any', waits: parents ? 1 : 0 };
  if (f && typeof f === 'object' && 'custom' in f) return { preset: `custom: ${f.custom}`, waits: f.custom };
  return { preset: JSON.stringify(f), waits: '?' };
}

function noMatch(node) {
  if (node.type !== 'decision') return '—';
  const p = node.no_match;
  if (p && p.policy === 'fallback') return h('span', {}, 'fallback → ', h('span', { class: 'mono' }, String(p.connector)));
  return p && p.policy ? p.policy : 'fail (default)';
}

/** Chips `code ×N` for a list of problems. */
export function chips(problems) {
  const counts = new Map();
  for (const e of problems || []) counts.set(e.code, (counts.get(e.code) || 0) + 1);
  return [...counts].map(([code, n]) => h('span', { class: 'invalid-chip', title: problems.filter((e) => e.code === code).map((e) => e.message).join('\n') }, n > 1 ? `${code} ×${n}` : code));
}

/** The routing inspector table and the list of every problem. */
export function routingInspector(definition, report) {
  const nodes = (definition && Array.isArray(definition.nodes)) ? definition.nodes : [];
  const connectors = (definition && Array.isArray(definition.connectors)) ? definition.connectors : [];
  const { byNode, byConnector } = placeProblems(definition, report.errors);
  const parents = new Map();
  for (const c of connectors) if ((c.mode || 'solid') === 'solid') parents.set(c.to, (parents.get(c.to) || 0) + 1);
  const rows = nodes.filter((n) => n && typeof n.id === 'string').map((n) => {
    const f = fanIn(n, parents.get(n.id) || 0);
    const problems = byNode.get(n.id) || [];
    return h('tr', { dataset: { node: n.id }, class: problems.length ? 'invalid' : '' },
      h('td', { class: 'mono' }, n.id), h('td', {}, n.type), h('td', {}, f.preset), h('td', {}, String(f.waits)),
      h('td', {}, noMatch(n)), h('td', {}, problems.length ? chips(problems) : h('span', { class: 'muted' }, 'none')));
  });
  const connectorRows = [...byConnector].map(([id, problems]) => h('tr', { dataset: { connector: id }, class: 'invalid' },
    h('td', { class: 'mono' }, id), h('td', {}, 'connector'), h('td', { colspan: 3 }, ''), h('td', {}, chips(problems))));
  const count = (report.errors || []).length;
  return h('section', { class: 'card routing-inspector', 'aria-labelledby': 'routing-title' },
    h('h2', { id: 'routing-title' }, 'Routing inspector'),
    h('p', { class: report.valid ? 'muted' : 'error', dataset: { problems: String(count) } },
      report.valid ? 'Valid under this server’s rules.' : `${count} problem${count === 1 ? '' : 's'} under this server’s rules.`),
    h('div', { class: 'table-wrap' }, h('table', { class: 'routing' },
      h('thead', {}, h('tr', {}, ['Node', 'Type', 'Fan-in', 'Waits for', 'No match', 'Problems'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows, connectorRows))),
    count ? h('ul', { class: 'problems', 'aria-label': 'Problems' }, (report.errors || []).map((e) =>
      h('li', {}, h('span', { class: 'mono' }, e.path || '(document)'), ' ', h('span', { class: 'invalid-chip' }, e.code), ' ', e.message))) : null);
}
