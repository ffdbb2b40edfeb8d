// The console's only way to the server: the public HTTP API under /v1 (docs/api.md).
// Credentials travel in the HttpOnly session cookie (never readable here); every mutating
// request carries `X-Runledger-Csrf`, which the server demands of cookie-authenticated writes.

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

let onUnauthorized = () => {};

/** Called with no arguments whenever the server answers 401. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export async function api(path, { method = 'GET', body, headers = {}, signal } = {}) {
  const init = { method, headers: { accept: 'application/json', ...headers }, credentials: 'same-origin', signal };
  if (method !== 'GET') init.headers['x-runledger-csrf'] = '1';
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network_error', `the server did not answer (${e.message})`);
  }
  const text = response.status === 204 ? '' : await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    if (response.status === 401) onUnauthorized();
    const err = data && data.error ? data.error : {};
    throw new ApiError(response.status, err.code || `http_${response.status}`, err.message || response.statusText, err.details);
  }
  return data;
}

/** A query string from an object, leaving out empty values. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : '';
}
