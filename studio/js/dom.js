// Small DOM helpers. Text always goes in as text nodes (never innerHTML), so nothing the API
// returns (model outputs, names) can become markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function fill(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An HTML element: h('a', {href: '/x'}, 'text', child, ...). */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Pretty JSON in a <pre>. */
export function json(value) {
  return h('pre', { class: 'json' }, value === undefined ? '—' : JSON.stringify(value, null, 2));
}

/** A definition list from [label, value] pairs (values may be nodes). */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]));
}

/** A status badge. */
export function badge(status) {
  return h('span', { class: `badge st-${status}` }, status);
}

/** Runs `fn` at most once per `ms`, trailing call kept. */
export function throttle(fn, ms) {
  let timer = null;
  let again = false;
  return (...args) => {
    if (timer) { again = true; return; }
    fn(...args);
    timer = setTimeout(function tick() {
      timer = null;
      if (again) { again = false; fn(...args); timer = setTimeout(tick, ms); }
    }, ms);
  };
}

/** Calls `fn` once `ms` after the last call. */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

/** Runs `fn` `ms` after the first of a burst of calls (later calls of the burst join it):
 *  live events arrive a moment before the projections have applied them. */
export function coalesce(fn, ms) {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; fn(); }, ms);
  };
}
