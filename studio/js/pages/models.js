// Models (the model registry, GET/POST/PUT/DELETE /v1/models): a list sorted by name, 25 a
// page, with a debounced search that resets to page 1, skeleton rows while loading, an inline
// error with Retry and an empty state; `/models/new` and `/models/{name}` as forms with Save
// (enabled once valid and changed) and Cancel, provider settings under "Advanced provider
// settings", a two-click delete, and a prompt before leaving unsaved changes.

import { api, qs } from '../api.js';
import { flash, navigate, replaceUrl, setLeaveGuard } from '../app.js';
import { debounce, h } from '../dom.js';
import { time } from '../format.js';

const PAGE = 25;
const PROVIDERS = ['openai_compatible', 'anthropic', 'gemini', 'scripted'];

export async function modelsPage({ main, query, alive }) {
  let page = Math.max(1, Number(query.get('page') || '1') || 1);
  let term = query.get('q') || '';
  const search = h('input', { id: 'm-q', type: 'search', value: term, placeholder: 'name, provider or model id', 'aria-label': 'Search models' });
  const body = h('tbody');
  const pager = h('div', { class: 'pager' });
  const newButton = () => h('a', { class: 'button primary', href: '/models/new' }, 'New Model');
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'Models'), newButton()),
    h('div', { class: 'filters' }, h('label', { class: 'grow' }, 'Search', search)),
    h('div', { class: 'table-wrap' }, h('table', { class: 'models' },
      h('thead', {}, h('tr', {}, ['Name', 'Provider', 'Model id', 'Executor class', 'Updated', h('span', { class: 'sr-only' }, 'Actions')].map((c) => h('th', { scope: 'col' }, c)))), body)),
    pager);
  let all = null;

  function show() {
    const t = term.trim().toLowerCase();
    const items = (all || []).filter((m) => !t || [m.name, m.spec.provider, m.spec.model_id].some((v) => String(v || '').toLowerCase().includes(t)))
      .sort((a, b) => a.name.localeCompare(b.name));
    const pages = Math.max(1, Math.ceil(items.length / PAGE));
    page = Math.min(page, pages);
    replaceUrl(`/models${qs({ q: term, page: page > 1 ? page : '' })}`);
    const rows = items.slice((page - 1) * PAGE, page * PAGE).map((m) => {
      const href = `/models/${encodeURIComponent(m.name)}`;
      const tr = h('tr', { class: 'clickable', tabindex: 0 },
        h('td', {}, h('a', { href }, m.name)), h('td', {}, m.spec.provider), h('td', { class: 'mono' }, m.spec.model_id),
        h('td', {}, m.spec.executor_class || 'default'), h('td', {}, time(m.updated_at)),
        h('td', {}, h('a', { href, class: 'icon', 'aria-label': `Edit ${m.name}`, title: `Edit ${m.name}` }, '✎')));
      tr.addEventListener('click', (e) => { if (!e.target.closest('a')) navigate(href); });
      tr.addEventListener('keydown', (e) => { if (e.key === 'Enter' && e.target === tr) navigate(href); });
      return tr;
    });
    if (!rows.length) {
      rows.push(h('tr', {}, h('td', { colspan: 6, class: 'empty' }, all.length ? 'No model matches the search.' : h('span', {}, 'No models yet. ', newButton()))));
    }
    body.replaceChildren(...rows);
    pager.replaceChildren(
      h('button', { type: 'button', disabled: page <= 1, onclick: () => { page--; show(); } }, '← Previous'),
      h('span', {}, `Page ${page} of ${pages}`),
      h('button', { type: 'button', disabled: page >= pages, onclick: () => { page++; show(); } }, 'Next →'));
  }

  async function load() {
    body.replaceChildren(...Array.from({ length: 5 }, () => h('tr', { class: 'skeleton', 'aria-hidden': 'true' }, Array.from({ length: 6 }, () => h('td', {}, h('span'))))));
    try {
      const data = await api('/v1/models');
      if (!alive()) return;
      all = data.items || [];
      show();
    } catch (e) {
      if (!alive()) return;
      body.replaceChildren(h('tr', {}, h('td', { colspan: 6, class: 'error', role: 'alert' }, `Could not load models: ${e.message} `,
        h('button', { type: 'button', onclick: load }, 'Retry'))));
    }
  }
  search.addEventListener('input', debounce(() => { term = search.value; page = 1; if (all) show(); }, 250));
  await load();
  return null;
}

function field(id, label, input, help) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, h('p', { class: 'field-error', id: `${id}-error`, role: 'alert' }), help ? h('p', { class: 'small muted' }, help) : null);
}

export async function modelPage({ main, params }) {
  const isNew = params[0] === 'new';
  let model = null;
  if (!isNew) model = await api(`/v1/models/${encodeURIComponent(params[0])}`);
  const spec = model ? model.spec : { provider: 'openai_compatible' };
  const inputs = {
    name: h('input', { id: 'm-name', value: spec.name || '', required: true, readonly: !isNew, pattern: '[A-Za-z0-9][A-Za-z0-9._\\-]*', maxlength: 100 }),
    provider: h('select', { id: 'm-provider', disabled: !isNew }, PROVIDERS.map((p) => h('option', { value: p, selected: spec.provider === p }, p))),
    model_id: h('input', { id: 'm-model_id', value: spec.model_id || '', required: true }),
    description: h('input', { id: 'm-description', value: spec.description || '' }),
    base_url: h('input', { id: 'm-base_url', value: spec.base_url || '', type: 'url' }),
    api_key_env: h('input', { id: 'm-api_key_env', value: spec.api_key_env || '', pattern: '[A-Za-z_][A-Za-z0-9_]*' }),
    executor_class: h('select', { id: 'm-executor_class' }, ['', 'frontier', 'vllm'].map((c) => h('option', { value: c, selected: (spec.executor_class || '') === c }, c || 'default'))),
    timeout_s: h('input', { id: 'm-timeout_s', type: 'number', min: 1, max: 3600, value: spec.timeout_s ?? '' }),
    settings: h('textarea', { id: 'm-settings', rows: 5, spellcheck: 'false' }, spec.settings ? JSON.stringify(spec.settings, null, 2) : '{}'),
  };
  const save = h('button', { type: 'submit', class: 'primary', form: 'model-form', disabled: true }, 'Save');
  const cancel = h('a', { class: 'button', href: '/models' }, 'Cancel');
  const form = h('form', { id: 'model-form', class: 'card form', novalidate: true },
    field('m-name', 'Name', inputs.name), field('m-provider', 'Provider', inputs.provider),
    field('m-model_id', 'Model id', inputs.model_id), field('m-description', 'Description', inputs.description),
    field('m-api_key_env', 'API key variable', inputs.api_key_env, 'The name of an environment variable of the executor; never the key.'),
    h('details', { class: 'advanced' }, h('summary', {}, 'Advanced provider settings'),
      field('m-base_url', 'Base URL', inputs.base_url), field('m-executor_class', 'Executor class', inputs.executor_class),
      field('m-timeout_s', 'Timeout (s)', inputs.timeout_s), field('m-settings', 'Settings (JSON)', inputs.settings)));

  function read() {
    const out = { name: inputs.name.value.trim(), provider: inputs.provider.value, model_id: inputs.model_id.value.trim() };
    for (const k of ['description', 'base_url', 'api_key_env', 'executor_class']) if (inputs[k].value.trim()) out[k] = inputs[k].value.trim();
    if (inputs.timeout_s.value) out.timeout_s = Number(inputs.timeout_s.value);
    let settings = {};
    try { settings = JSON.parse(inputs.settings.value || '{}'); } catch { settings = undefined; }
    if (settings === undefined || (settings && Object.keys(settings).length)) out.settings = settings;
    return out;
  }
  const errors = (v) => {
    const e = {};
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(v.name)) e['m-name'] = 'A name of letters, digits, `.`, `_`, `-`, starting with a letter or digit.';
    if (!v.model_id) e['m-model_id'] = 'Required.';
    if ('settings' in v && (v.settings === undefined || typeof v.settings !== 'object' || Array.isArray(v.settings))) e['m-settings'] = 'A JSON object.';
    if (v.timeout_s !== undefined && !(v.timeout_s >= 1 && v.timeout_s <= 3600)) e['m-timeout_s'] = '1 to 3600.';
    if (v.api_key_env && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(v.api_key_env)) e['m-api_key_env'] = 'An environment variable name.';
    return e;
  };
  const initial = JSON.stringify(read());
  let dirty = false;
  function check() {
    const v = read();
    const e = errors(v);
    for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
    for (const [id, msg] of Object.entries(e)) {
      const el = document.getElementById(`${id}-error`);
      if (el) el.textContent = msg;
    }
    dirty = JSON.stringify(v) !== initial;
    save.disabled = !dirty || Object.keys(e).length > 0;
  }
  form.addEventListener('input', check);
  form.addEventListener('change', check);
  setLeaveGuard(() => !dirty || window.confirm('Leave this page? Unsaved changes are lost.'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    check();
    if (save.disabled) return;
    const v = read();
    try {
      if (isNew) await api('/v1/models', { method: 'POST', body: { spec: v } });
      else await api(`/v1/models/${encodeURIComponent(model.name)}`, { method: 'PUT', body: { spec: v, expected_version: model.version } });
      dirty = false;
      flash(isNew ? `Model ${v.name} created` : `Model ${v.name} saved`);
      navigate('/models');
    } catch (err) {
      const fieldName = err.details && err.details.field;
      const target = fieldName && document.getElementById(`m-${String(fieldName).split('.')[0]}-error`);
      if (target) target.textContent = err.message;
      flash(`Save failed: ${err.code}: ${err.message}`, 'error');
    }
  });
  const del = h('button', { type: 'button', class: 'danger', hidden: isNew }, 'Delete');
  let armed = false;
  del.addEventListener('click', async () => {
    if (!armed) { armed = true; del.textContent = 'Click again to delete'; setTimeout(() => { armed = false; del.textContent = 'Delete'; }, 4000); return; }
    try {
      await api(`/v1/models/${encodeURIComponent(model.name)}${qs({ expected_version: model.version })}`, { method: 'DELETE' });
      dirty = false;
      flash(`Model ${model.name} deleted`);
      navigate('/models');
    } catch (err) {
      flash(`Delete failed: ${err.code}: ${err.message}`, 'error');
    }
  });
  main.append(h('p', { class: 'crumbs' }, h('a', { href: '/models' }, '← Models')),
    h('div', { class: 'page-head' }, h('h1', {}, isNew ? 'New model' : `Model ${model.name}`), h('div', { class: 'actions' }, cancel, save, del)),
    form);
  return { dispose: () => setLeaveGuard(null) };
}
