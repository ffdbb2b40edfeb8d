// Flowcharts: the registry list (GET /v1/flowcharts) and one version drawn as a graph with its
// definition (GET /v1/flowcharts/{name}[/versions/{version}]).

import { api } from '../api.js';
import { facts, h, json } from '../dom.js';
import { time } from '../format.js';
import { drawGraph } from '../graph.js';

export async function flowchartsPage({ main }) {
  const data = await api('/v1/flowcharts?limit=500');
  main.append(h('h1', {}, 'Flowcharts'), h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, ['Name', 'Latest version', 'Description', 'Created'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, (data.items || []).map((f) => h('tr', {},
      h('td', {}, h('a', { href: `/flowcharts/${encodeURIComponent(f.name)}` }, f.name)), h('td', {}, `v${f.version}`),
      h('td', {}, f.description || ''), h('td', {}, time(f.created_at))))))));
  return null;
}

export async function flowchartPage({ main, params }) {
  const [name, version] = params;
  const path = version ? `/v1/flowcharts/${encodeURIComponent(name)}/versions/${version}` : `/v1/flowcharts/${encodeURIComponent(name)}`;
  const [f, versions] = await Promise.all([api(path), api(`/v1/flowcharts/${encodeURIComponent(name)}/versions`)]);
  const graphBox = h('div', { class: 'graph-box' });
  main.append(h('p', { class: 'crumbs' }, h('a', { href: '/flowcharts' }, '← Flowcharts')),
    h('h1', {}, `${f.name} v${f.version}`),
    facts([['Description', f.description || '—'], ['Definition hash', h('span', { class: 'mono' }, f.definition_hash)], ['Created', time(f.created_at)], ['By', f.actor],
      ['Versions', h('span', {}, (versions.items || versions || []).map((v) => [h('a', { href: `/flowcharts/${encodeURIComponent(name)}/${v.version}` }, `v${v.version}`), ' ']))]]),
    h('section', { class: 'card' }, h('h2', {}, 'Graph'), graphBox),
    h('h2', {}, 'Definition'), json(f.definition));
  drawGraph(graphBox, f.definition || { nodes: [], connectors: [] }).update(new Map());
  return null;
}
