// Artifacts: the explorer (GET /v1/artifacts with filters run, node run, node id, node type,
// artifact type; newest first; 25 a page) and one artifact (GET /v1/artifacts/{id}).

import { api, qs } from '../api.js';
import { navigate } from '../app.js';
import { badge, facts, h, json } from '../dom.js';
import { shortId, time } from '../format.js';

const FILTERS = [
  ['run_id', 'Run id'], ['node_run_id', 'Node run id'], ['node_id', 'Node id'], ['node_type', 'Node type'], ['artifact_type', 'Artifact type'],
];
const NODE_TYPES = ['start', 'end', 'task', 'decision', 'memory', 'plan', 'milestone', 'rag', 'flowchart'];

export async function artifactsPage({ main, query, state, alive }) {
  const values = Object.fromEntries(FILTERS.map(([k]) => [k, query.get(k) || '']));
  const cursor = query.get('cursor') || '';
  const prevCursors = Array.isArray(state.prevCursors) ? state.prevCursors : [];
  const inputs = {};
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter artifacts' },
    FILTERS.map(([k, label]) => {
      const input = k === 'node_type'
        ? h('select', { id: `a-${k}` }, h('option', { value: '' }, 'any'), NODE_TYPES.map((t) => h('option', { value: t, selected: values[k] === t }, t)))
        : h('input', { id: `a-${k}`, value: values[k], autocomplete: 'off' });
      inputs[k] = input;
      return h('label', {}, label, input);
    }),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Apply'), h('button', { type: 'button', onclick: () => navigate('/artifacts') }, 'Clear')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    navigate(`/artifacts${qs(Object.fromEntries(FILTERS.map(([k]) => [k, inputs[k].value.trim()])))}`);
  });
  const body = h('tbody');
  const prev = h('button', { type: 'button', disabled: !cursor }, '← Newer');
  const next = h('button', { type: 'button', disabled: true }, 'Older →');
  main.append(h('h1', {}, 'Artifacts'), form,
    h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Artifact', 'Type', 'Node', 'Status', 'Run', 'Contract', 'Recorded'].map((c) => h('th', { scope: 'col' }, c)))), body)),
    h('div', { class: 'pager' }, prev, next));
  let data;
  try {
    data = await api(`/v1/artifacts${qs({ ...values, cursor, limit: 25 })}`);
  } catch (e) {
    body.append(h('tr', {}, h('td', { colspan: 7, class: 'error', role: 'alert' }, `Could not list artifacts: ${e.message}`)));
    return null;
  }
  if (!alive()) return null;
  body.replaceChildren(...data.items.map((a) => {
    const href = `/artifacts/${a.artifact_id}`;
    const tr = h('tr', { class: 'clickable', tabindex: 0 },
      h('td', {}, h('a', { href, class: 'mono' }, shortId(a.artifact_id))),
      h('td', {}, a.artifact_type), h('td', {}, `${a.node_id} (${a.node_type})`), h('td', {}, badge(a.status)),
      h('td', {}, h('a', { href: `/runs/${a.run_id}`, class: 'mono' }, shortId(a.run_id))),
      h('td', {}, `v${a.contract_version}`), h('td', {}, time(a.recorded_at)));
    tr.addEventListener('click', (e) => { if (!e.target.closest('a')) navigate(href); });
    tr.addEventListener('keydown', (e) => { if (e.key === 'Enter' && e.target === tr) navigate(href); });
    return tr;
  }));
  if (!data.items.length) body.append(h('tr', {}, h('td', { colspan: 7, class: 'empty' }, 'No artifacts match.')));
  next.disabled = !data.next_cursor;
  next.addEventListener('click', () => navigate(`/artifacts${qs({ ...values, cursor: data.next_cursor })}`, { state: { prevCursors: [...prevCursors, cursor] } }));
  prev.addEventListener('click', () => { const st = [...prevCursors]; const back = st.pop() || ''; navigate(`/artifacts${qs({ ...values, cursor: back })}`, { state: { prevCursors: st } }); });
  return null;
}

export async function artifactPage({ main, params }) {
  const a = await api(`/v1/artifacts/${encodeURIComponent(params[0])}`);
  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: '/artifacts' }, '← Artifacts')),
    h('h1', {}, `Artifact ${a.artifact_type} `, h('span', { class: 'mono' }, shortId(a.artifact_id))),
    facts([
      ['Artifact id', h('span', { class: 'mono' }, a.artifact_id)],
      ['Run', h('a', { href: `/runs/${a.run_id}?node=${encodeURIComponent(a.node_id)}&node_run=${a.node_run_id}`, class: 'mono' }, a.run_id)],
      ['Node', `${a.node_id} (${a.node_type})`], ['Node run', h('span', { class: 'mono' }, a.node_run_id)],
      ['Status', badge(a.status)], ['Contract version', String(a.contract_version)],
      ['Request id', h('span', { class: 'mono' }, a.request_id)], ['Correlation id', h('span', { class: 'mono' }, a.correlation_id)],
      ['Idempotency key', h('span', { class: 'mono' }, a.idempotency_key)], ['Content hash', h('span', { class: 'mono' }, a.content_hash)],
      ['Stream', `${a.stream_id} v${a.stream_version}`], ['Recorded', time(a.recorded_at)],
    ]),
    h('h2', {}, 'Payload'), json(a.payload),
    ...(a.content ? [h('h2', {}, 'Content (blob)'), json(a.content)] : []));
  return null;
}
