// Flowcharts: the registry list (GET /v1/flowcharts), one version drawn as a graph with its
// definition and its routing inspector (GET /v1/flowcharts/{name}[/versions/{version}]), and a
// page that checks a draft against the server's rules (`/validate`, POST /v1/flowcharts/validate)
// with each problem shown on the node or connector it concerns.

import { api } from '../api.js';
import { facts, h, json } from '../dom.js';
import { time } from '../format.js';
import { drawGraph } from '../graph.js';
import { placeProblems, routingInspector, validate } from './routing.js';

export async function flowchartsPage({ main }) {
  const data = await api('/v1/flowcharts?limit=500');
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'Flowcharts'), h('a', { class: 'button', href: '/validate' }, 'Check a draft')),
    h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Name', 'Latest version', 'Description', 'Created'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, (data.items || []).map((f) => h('tr', {},
        h('td', {}, h('a', { href: `/flowcharts/${encodeURIComponent(f.name)}` }, f.name)), h('td', {}, `v${f.version}`),
        h('td', {}, f.description || ''), h('td', {}, time(f.created_at))))))));
  return null;
}

/** Draws `definition` with its problems into `graphBox`, and returns the routing inspector. */
function showChecked(graphBox, definition, report) {
  const drawable = definition && typeof definition === 'object' && Array.isArray(definition.nodes);
  if (drawable) {
    const graph = drawGraph(graphBox, { ...definition, connectors: Array.isArray(definition.connectors) ? definition.connectors : [] });
    graph.update(new Map());
    const { byNode, byConnector } = placeProblems(definition, report.errors);
    graph.problems(byNode, byConnector);
  } else {
    graphBox.replaceChildren(h('p', { class: 'muted' }, 'The graph is drawn for JSON text; YAML is checked by the server and its problems listed below.'));
  }
  return routingInspector(drawable ? definition : null, report);
}

export async function flowchartPage({ main, params }) {
  const [name, version] = params;
  const path = version ? `/v1/flowcharts/${encodeURIComponent(name)}/versions/${version}` : `/v1/flowcharts/${encodeURIComponent(name)}`;
  const [f, versions] = await Promise.all([api(path), api(`/v1/flowcharts/${encodeURIComponent(name)}/versions`)]);
  const graphBox = h('div', { class: 'graph-box' });
  const inspectorSlot = h('div', {});
  main.append(h('p', { class: 'crumbs' }, h('a', { href: '/flowcharts' }, '← Flowcharts')),
    h('h1', {}, `${f.name} v${f.version}`),
    facts([['Description', f.description || '—'], ['Definition hash', h('span', { class: 'mono' }, f.definition_hash)], ['Created', time(f.created_at)], ['By', f.actor],
      ['Versions', h('span', {}, (versions.items || versions || []).map((v) => [h('a', { href: `/flowcharts/${encodeURIComponent(name)}/${v.version}` }, `v${v.version}`), ' ']))]]),
    h('section', { class: 'card' }, h('h2', {}, 'Graph'), graphBox),
    inspectorSlot,
    h('h2', {}, 'Definition'), json(f.definition));
  const definition = f.definition || { nodes: [], connectors: [] };
  drawGraph(graphBox, definition).update(new Map());
  // A stored version was valid when saved; the rules may have grown since.
  validate(definition)
    .then((report) => inspectorSlot.replaceChildren(showChecked(graphBox, definition, report)))
    .catch((e) => inspectorSlot.replaceChildren(h('p', { class: 'error', role: 'alert' }, `Could not check this version: ${e.message}`)));
  return null;
}

export async function validatePage({ main }) {
  const text = h('textarea', { id: 'draft', class: 'draft', rows: 14, spellcheck: 'false', 'aria-describedby': 'draft-help' });
  const check = h('button', { type: 'submit' }, 'Check');
  const graphBox = h('div', { class: 'graph-box' });
  const result = h('div', { id: 'draft-result', 'aria-live': 'polite' });
  const form = h('form', { class: 'card' },
    h('label', { for: 'draft' }, 'Flowchart (YAML or JSON)'), text,
    h('p', { id: 'draft-help', class: 'small muted' }, 'Checked by the server with the rules `runledger validate` and run starts use; nothing is saved.'),
    check);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    check.disabled = true;
    try {
      let definition = null;
      try { definition = JSON.parse(text.value); } catch { definition = null; }
      const report = await validate(definition && typeof definition === 'object' ? definition : text.value);
      result.replaceChildren(h('section', { class: 'card' }, h('h2', {}, 'Graph'), graphBox), showChecked(graphBox, definition, report));
    } catch (err) {
      result.replaceChildren(h('p', { class: 'error', role: 'alert' }, `Could not check: ${err.code || ''} ${err.message}`));
    } finally {
      check.disabled = false;
    }
  });
  main.append(h('p', { class: 'crumbs' }, h('a', { href: '/flowcharts' }, '← Flowcharts')), h('h1', {}, 'Check a flowchart'), form, result);
  return null;
}
