// Every call the console makes goes through this file: the same JSON API as `furrow ctl`, with the
// session cookie (set by /console/login) instead of a bearer token, and the CSRF header on every call that
// changes something.

let csrf = null;
let onUnauthorized = () => {};

export function setCsrf(token) { csrf = token; }
export function whenUnauthorized(f) { onUnauthorized = f; }

/** An error answered by the API: `{code, message, field}` plus the HTTP status. */
export class ApiError extends Error {
  constructor(status, e) {
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || `http_${status}`;
    this.field = e.field || null;
  }
}

export async function call(method, path, body, extraHeaders) {
  const headers = { Accept: 'application/json', ...(extraHeaders || {}) };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['X-Furrow-CSRF'] = csrf;
  const resp = await fetch(path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!resp.ok) {
    const e = (json && json.error) || { message: text || resp.statusText };
    if (resp.status === 401 && !path.startsWith('/console/login')) onUnauthorized();
    throw new ApiError(resp.status, e);
  }
  return json;
}

export const get = (p) => call('GET', p);
export const post = (p, b) => call('POST', p, b === undefined ? {} : b);
export const put = (p, b) => call('PUT', p, b);
export const del = (p) => call('DELETE', p);

const enc = encodeURIComponent;
export const q = (params) => {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') s.set(k, v);
  const t = s.toString();
  return t ? `?${t}` : '';
};

/** `/v1/apps/{app}/envs/{env}/clusters/{cluster}/namespaces/{ns}` */
export function nsPath(n) {
  return `/v1/apps/${enc(n.app)}/envs/${enc(n.env)}/clusters/${enc(n.cluster)}/namespaces/${enc(n.ns)}`;
}
export const seg = enc;

/** Logs in with `{token}` or `{user, password}`. */
export async function login(credentials) {
  const r = await call('POST', '/console/login', credentials, { 'X-Furrow-CSRF': 'login' });
  setCsrf(r.csrf);
  return r;
}
export async function session() {
  const r = await get('/console/session');
  setCsrf(r.csrf);
  return r;
}
export async function logout() {
  await post('/console/logout');
  setCsrf(null);
}
