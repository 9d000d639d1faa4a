// The facade's API from the page: a bearer token from POST /token, kept in this tab's
// sessionStorage (never in a URL), sent on every call; a 401 sends the user back to the login form.
const KEY = "kms-token";

export class ApiError extends Error {
  constructor(status, detail, field) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.field = field;
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function logout() {
  sessionStorage.removeItem(KEY);
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export async function login(username, password) {
  const body = new URLSearchParams({ username, password, grant_type: "password" });
  const r = await fetch("../token", { method: "POST", body });
  if (!r.ok) throw await errorOf(r);
  const t = await r.json();
  sessionStorage.setItem(KEY, t.access_token);
  return t;
}

async function errorOf(r) {
  let detail = `${r.status} ${r.statusText}`;
  let field;
  try {
    const b = await r.json();
    if (b && typeof b.detail === "string") detail = b.detail;
    field = b && b.field;
  } catch {
    /* not JSON */
  }
  return new ApiError(r.status, detail, field);
}

// One call: `path` relative to the facade root ("datasets?q=x"); returns the Response (ok only).
export async function call(path, { method = "GET", json, headers = {}, contentType } = {}) {
  const h = { ...headers };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  let body;
  if (json !== undefined) {
    body = JSON.stringify(json);
    h["Content-Type"] = contentType || "application/json";
  }
  const r = await fetch(`../${path}`, { method, headers: h, body, cache: "no-store" });
  if (r.status === 401) {
    logout();
    onUnauthorized();
  }
  if (!r.ok) throw await errorOf(r);
  return r;
}

export async function getJson(path) {
  return (await call(path)).json();
}
