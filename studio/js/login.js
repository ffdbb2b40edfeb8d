// Asks for the API token once and trades it for an HttpOnly session cookie
// (`POST /v1/session`); the token is never stored by the console, nor put in a URL.

import { api } from './api.js';
import { h } from './dom.js';

let shown = false;

export function showLogin(main, then) {
  if (shown) return;
  shown = true;
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'current-password', required: true, 'aria-describedby': 'token-help' });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const form = h('form', { class: 'login card', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'Sign in'),
    h('p', { id: 'token-help' }, 'This server needs its API token (RUNLEDGER_API_TOKEN). The console keeps a session cookie for this browser session; the token is not stored.'),
    h('label', { for: 'token' }, 'API token'), input, error,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Sign in')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    try {
      await api('/v1/session', { method: 'POST', body: { token: input.value } });
      shown = false;
      document.getElementById('sign-out').hidden = false;
      then();
    } catch (err) {
      error.textContent = err.status === 401 ? 'That is not the server’s token.' : err.message;
      error.hidden = false;
      input.focus();
    }
  });
  main.replaceChildren(form);
  input.focus();
}
