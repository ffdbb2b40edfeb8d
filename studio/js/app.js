// The console's shell: a router over the History API (so the back button and reloads work on
// every page), the shared flash area, the confirmation dialog and the sign-in gate.

import { api, setUnauthorizedHandler } from './api.js';
import { h } from './dom.js';
import { showLogin } from './login.js';
import { runsPage } from './pages/runs.js';
import { runPage } from './pages/run.js';
import { artifactsPage, artifactPage } from './pages/artifacts.js';
import { claimsPage } from './pages/claims.js';
import { modelsPage, modelPage } from './pages/models.js';
import { flowchartsPage, flowchartPage, validatePage } from './pages/flowcharts.js';

const ROUTES = [
  [/^\/(?:runs\/?)?$/, runsPage, 'runs'],
  [/^\/runs\/([^/]+)$/, runPage, 'runs'],
  [/^\/artifacts\/?$/, artifactsPage, 'artifacts'],
  [/^\/artifacts\/([^/]+)$/, artifactPage, 'artifacts'],
  [/^\/claims\/?$/, claimsPage, 'claims'],
  [/^\/models\/?$/, modelsPage, 'models'],
  [/^\/models\/([^/]+)$/, modelPage, 'models'],
  [/^\/flowcharts\/?$/, flowchartsPage, 'flowcharts'],
  [/^\/flowcharts\/([^/]+)(?:\/(\d+))?$/, flowchartPage, 'flowcharts'],
  [/^\/validate\/?$/, validatePage, 'flowcharts'],
];

const main = document.getElementById('main');
let current = null;
let generation = 0;
/** A page may refuse to be left (unsaved changes): it sets this to a function returning false. */
let leaveGuard = null;

export function setLeaveGuard(fn) {
  leaveGuard = fn;
}

function rememberScroll() {
  history.replaceState({ ...(history.state || {}), scroll: window.scrollY }, '');
}

/** Goes to `url` inside the console; `state` is kept in the history entry. */
export function navigate(url, { replace = false, state = {} } = {}) {
  if (leaveGuard && !leaveGuard()) return;
  leaveGuard = null;
  rememberScroll();
  history[replace ? 'replaceState' : 'pushState'](state, '', url);
  render({ restoreScroll: false });
}

/** Replaces the current URL (e.g. filters typed) without a new history entry or re-render. */
export function replaceUrl(url, state) {
  history.replaceState({ ...(history.state || {}), ...(state || {}) }, '', url);
}

let flashTimer = null;
/** Shows an outcome in the shared flash area (`kind`: ok, error, info). */
export function flash(message, kind = 'ok') {
  const area = document.getElementById('flash');
  area.replaceChildren(h('p', { class: `flash-${kind}` }, message,
    h('button', { type: 'button', class: 'link', 'aria-label': 'Dismiss message', onclick: () => area.replaceChildren() }, '×')));
  clearTimeout(flashTimer);
  if (kind !== 'error') flashTimer = setTimeout(() => area.replaceChildren(), 8000);
}

/** Asks before an operator action; resolves true when confirmed. */
export function confirmAction(text, okLabel = 'Confirm') {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = okLabel;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
    document.getElementById('confirm-ok').focus();
  });
}

async function render({ restoreScroll = true } = {}) {
  const gen = ++generation;
  if (current && current.dispose) current.dispose();
  current = null;
  const path = location.pathname;
  let matched = null;
  for (const [re, page, section] of ROUTES) {
    const m = path.match(re);
    if (m) { matched = { page, section, params: m.slice(1).map((p) => (p === undefined ? p : decodeURIComponent(p))) }; break; }
  }
  for (const a of document.querySelectorAll('nav a')) {
    if (matched && a.dataset.section === matched.section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.replaceChildren();
  if (!matched) {
    main.append(h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', { href: '/runs' }, 'Go to runs')));
    return;
  }
  const ctx = { main, params: matched.params, query: new URLSearchParams(location.search), state: history.state || {}, alive: () => gen === generation };
  try {
    current = (await matched.page(ctx)) || null;
  } catch (e) {
    if (gen !== generation) return;
    main.append(h('p', { class: 'error', role: 'alert' }, `Could not load this page: ${e.message}`));
  }
  if (gen !== generation) { if (current && current.dispose) current.dispose(); return; }
  const scroll = (history.state || {}).scroll;
  if (restoreScroll && typeof scroll === 'number') window.scrollTo(0, scroll);
  else if (!restoreScroll) window.scrollTo(0, 0);
}

// Links inside the console navigate without reloading; API links (exports) and new tabs do not.
document.addEventListener('click', (e) => {
  const a = e.target.closest('a');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  if (a.target || a.hasAttribute('download') || a.origin !== location.origin) return;
  if (a.pathname.startsWith('/v1/') || a.pathname.startsWith('/studio/') || a.pathname === '/openapi.json') return;
  e.preventDefault();
  navigate(a.pathname + a.search);
});

window.addEventListener('popstate', () => {
  leaveGuard = null;
  render({ restoreScroll: true });
});
window.addEventListener('beforeunload', (e) => {
  if (leaveGuard && !leaveGuard(true)) { e.preventDefault(); e.returnValue = ''; }
});
history.scrollRestoration = 'manual';

async function start() {
  setUnauthorizedHandler(() => showLogin(main, () => render()));
  let session = { token_required: false, authenticated: true, reads_open: true };
  try {
    session = await api('/v1/session');
  } catch (e) {
    main.replaceChildren(h('p', { class: 'error', role: 'alert' }, `The server did not answer: ${e.message}`));
    return;
  }
  const signOut = document.getElementById('sign-out');
  if (session.token_required) {
    signOut.hidden = false;
    signOut.addEventListener('click', async () => {
      await api('/v1/session', { method: 'DELETE' }).catch(() => {});
      location.assign('/runs');
    });
  }
  if (session.token_required && !session.authenticated && !session.reads_open) {
    showLogin(main, () => render());
    return;
  }
  render();
}

start();
