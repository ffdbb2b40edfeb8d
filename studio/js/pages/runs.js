// Runs: newest first, 25 a page, filtered by status, flowchart, start time and a search; the
// filters, page and scroll live in the URL and history entry, so the back button restores
// them. Live: any run or node event refreshes the page shown (at most once a second).

import { api, qs } from '../api.js';
import { navigate } from '../app.js';
import { badge, coalesce, debounce, h } from '../dom.js';
import { duration, localToRfc3339, rfc3339ToLocal, shortId, time } from '../format.js';
import { subscribe } from '../live.js';

const PAGE = 25;
const STATUSES = ['running', 'paused', 'canceling', 'completed', 'failed', 'canceled'];
const FILTERS = ['status', 'flowchart', 'started_after', 'started_before', 'q'];

function counts(r) {
  const parts = Object.entries(r.node_run_counts || {}).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k}`);
  return h('span', { title: parts.join(', ') }, String(r.node_run_count), parts.length ? h('span', { class: 'muted small' }, ` (${parts.join(', ')})`) : null);
}

export async function runsPage({ main, query, state, alive }) {
  const filters = Object.fromEntries(FILTERS.map((f) => [f, query.get(f) || '']));
  const cursor = query.get('cursor') || '';
  const page = Number(query.get('page') || '1') || 1;
  const prevCursors = Array.isArray(state.prevCursors) ? state.prevCursors : [];

  const status = h('select', { id: 'f-status', name: 'status' }, h('option', { value: '' }, 'any'),
    STATUSES.map((s) => h('option', { value: s, selected: filters.status === s }, s)));
  const flowchart = h('input', { id: 'f-flowchart', name: 'flowchart', list: 'flowchart-names', value: filters.flowchart, pattern: '[A-Za-z0-9_.\\-]{1,128}', autocomplete: 'off' });
  const names = h('datalist', { id: 'flowchart-names' });
  const after = h('input', { id: 'f-after', name: 'started_after', type: 'datetime-local', value: rfc3339ToLocal(filters.started_after) });
  const before = h('input', { id: 'f-before', name: 'started_before', type: 'datetime-local', value: rfc3339ToLocal(filters.started_before) });
  const search = h('input', { id: 'f-q', name: 'q', type: 'search', value: filters.q, maxlength: 200, placeholder: 'run id, flowchart or actor' });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter runs' },
    h('label', {}, 'Status', status),
    h('label', {}, 'Flowchart', flowchart), names,
    h('label', {}, 'Started after', after),
    h('label', {}, 'Started before', before),
    h('label', { class: 'grow' }, 'Search', search),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Apply'),
      h('button', { type: 'button', onclick: () => navigate('/runs') }, 'Clear')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const next = {
      status: status.value, flowchart: flowchart.value.trim(), q: search.value.trim(),
      started_after: localToRfc3339(after.value), started_before: localToRfc3339(before.value),
    };
    navigate(`/runs${qs(next)}`);
  });

  const body = h('tbody');
  const summary = h('p', { class: 'muted', 'aria-live': 'polite' });
  const prev = h('button', { type: 'button', disabled: page <= 1 }, '← Newer');
  const next = h('button', { type: 'button', disabled: true }, 'Older →');
  const live = h('span', { class: 'live-dot', title: 'live updates' }, 'live');
  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Runs'), live),
    form,
    h('div', { class: 'table-wrap' }, h('table', { class: 'runs' },
      h('caption', { class: 'sr-only' }, 'Runs, newest first'),
      h('thead', {}, h('tr', {}, ['Run', 'Status', 'Flowchart', 'Started', 'Duration', 'Node runs'].map((c) => h('th', { scope: 'col' }, c)))),
      body)),
    h('div', { class: 'pager' }, prev, h('span', {}, `Page ${page}`), next),
    summary);

  api('/v1/flowcharts?limit=500').then((list) => {
    for (const f of list.items || []) names.append(h('option', { value: f.name }));
  }).catch(() => {});

  let nextCursor = null;
  async function load() {
    const params = { ...filters, cursor, limit: PAGE };
    let data;
    try {
      data = await api(`/v1/runs${qs(params)}`);
    } catch (e) {
      if (!alive()) return;
      body.replaceChildren(h('tr', {}, h('td', { colspan: 6, class: 'error', role: 'alert' }, `Could not list runs: ${e.message}`)));
      return;
    }
    if (!alive()) return;
    nextCursor = data.next_cursor;
    next.disabled = !nextCursor;
    const rows = data.items.map((r) => {
      const href = `/runs/${r.run_id}`;
      const tr = h('tr', { class: 'clickable', tabindex: 0, dataset: { runId: r.run_id }, 'aria-label': `Run ${r.run_id}, ${r.status}` },
        h('td', {}, h('a', { href, class: 'mono' }, shortId(r.run_id))),
        h('td', {}, badge(r.status)),
        h('td', {}, r.flowchart_name, r.flowchart_version ? h('span', { class: 'muted' }, ` v${r.flowchart_version}`) : null),
        h('td', {}, h('time', { datetime: r.started_at }, time(r.started_at))),
        h('td', {}, duration(r.duration_ms)),
        h('td', {}, counts(r)));
      tr.addEventListener('click', (e) => { if (!e.target.closest('a')) navigate(href); });
      tr.addEventListener('keydown', (e) => { if (e.key === 'Enter' && e.target === tr) navigate(href); });
      return tr;
    });
    body.replaceChildren(...(rows.length ? rows : [h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No runs match.'))]));
    summary.textContent = `${data.items.length} run${data.items.length === 1 ? '' : 's'} on this page`;
  }

  next.addEventListener('click', () => {
    if (!nextCursor) return;
    navigate(`/runs${qs({ ...filters, cursor: nextCursor, page: page + 1 })}`, { state: { prevCursors: [...prevCursors, cursor] } });
  });
  prev.addEventListener('click', () => {
    const stack = [...prevCursors];
    const back = stack.pop() || '';
    navigate(`/runs${qs({ ...filters, cursor: back, page: back ? page - 1 : '' })}`, { state: { prevCursors: stack } });
  });

  await load();
  // The list has no version to wait for: an event can arrive before the projection has applied
  // it, so a burst of events is followed by one more read once the burst has settled.
  const refresh = coalesce(() => load(), 400);
  const settle = debounce(() => load(), 1500);
  const stop = subscribe({ onOpen: refresh }, (ev) => {
    if (ev.event === 'flowchart:run:updated' || ev.event === 'flowchart:node:updated') {
      refresh();
      settle();
    }
  });
  return { dispose: stop };
}
