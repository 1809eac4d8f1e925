// Every request to /api/gateway with the tab's bearer token; errors become ApiError with the
// server's `detail`, so each view shows exactly what any client would get (401, 403, 4xx...).

const TOKEN_KEY = "abstractgateway.token";

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }

  describe() {
    if (this.status === 401) return `Not signed in (401): ${this.message}`;
    if (this.status === 403) return `Not allowed (403): ${this.message}`;
    return `${this.status}: ${this.message}`;
  }
}

const listeners = { unauthorized: [] };

export function onUnauthorized(fn) {
  listeners.unauthorized.push(fn);
}

export function authHeaders(extra = {}) {
  const token = getToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

async function errorOf(response) {
  let detail = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.detail !== undefined) detail = body.detail;
  } catch (_) {
    // not JSON: keep the status text
  }
  return new ApiError(response.status, detail);
}

// JSON in, JSON out. `body` may be FormData (uploads): the browser sets the multipart header.
export async function api(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, headers: authHeaders(headers), cache: "no-store" };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401) listeners.unauthorized.forEach((fn) => fn(error));
    throw error;
  }
  const type = response.headers.get("content-type") || "";
  return type.includes("application/json") ? response.json() : response.blob();
}

// Artifact bytes need the token too: fetched as a blob and shown through an object URL.
export async function blobUrl(path) {
  const blob = await api(path);
  return URL.createObjectURL(blob instanceof Blob ? blob : new Blob([JSON.stringify(blob)]));
}

export function newId() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

export function command(runId, type, payload = {}) {
  return api("/api/gateway/commands", {
    method: "POST",
    body: { command_id: `console-${newId()}`, run_id: runId, type, payload, client_id: "console" },
  });
}
