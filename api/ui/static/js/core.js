// Shared helpers of the dashboard (contract: CONTRACT.md). No innerHTML with data anywhere:
// every value reaches the page as a text node or an attribute set through the DOM.

export const API_BASE = "/api/v1/devops";

export class ApiError extends Error {
  constructor(status, detail) {
    super(describe(detail, status));
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
  }
}

function describe(detail, status) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((p) => `${locText(p.loc)}${locText(p.loc) ? ": " : ""}${p.msg ?? ""}`).join("; ");
  }
  if (detail && typeof detail === "object") return JSON.stringify(detail);
  return `request failed (${status})`;
}

function locText(loc) {
  if (!Array.isArray(loc)) return loc ? String(loc) : "";
  const parts = loc[0] === "body" || loc[0] === "query" || loc[0] === "path" ? loc.slice(1) : loc;
  return parts.join(".");
}

export function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return "";
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

function queryString(query) {
  if (!query) return "";
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === null || value === undefined || value === "") continue;
    params.append(key, String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

export async function api(method, path, { json, query, body, headers } = {}) {
  const sent = { Accept: "application/json", ...(headers || {}) };
  const upper = method.toUpperCase();
  if (!["GET", "HEAD", "OPTIONS"].includes(upper)) sent["X-CSRF-Token"] = cookie("devops_csrf");
  let payload = body;
  if (json !== undefined) {
    sent["Content-Type"] = "application/json";
    payload = JSON.stringify(json);
  }
  const response = await fetch(API_BASE + path + queryString(query), {
    method: upper, headers: sent, body: payload, credentials: "same-origin",
  });
  const type = response.headers.get("content-type") || "";
  let data = null;
  if (response.status !== 204) {
    data = type.includes("json") ? await response.json().catch(() => null) : await response.text();
  }
  if (!response.ok) {
    const detail = data && typeof data === "object" && "detail" in data ? data.detail : data;
    if (response.status === 401) onUnauthorized();
    throw new ApiError(response.status, detail);
  }
  return data;
}

const PROPERTIES = new Set(["value", "checked", "disabled", "hidden", "selected", "multiple", "required"]);

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (PROPERTIES.has(key)) {
      el[key] = value;
    } else if (key === "class" && Array.isArray(value)) {
      el.className = value.filter(Boolean).join(" ");
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function errorList(detail) {
  const box = h("div", { class: "errors", role: "alert" });
  if (Array.isArray(detail)) {
    box.appendChild(h("p", {}, "Please fix:"));
    box.appendChild(h("ul", {}, detail.map((problem) => {
      const where = locText(problem.loc);
      return h("li", { "data-loc": where }, where ? h("strong", { class: "mono" }, where) : null,
        where ? ": " : "", problem.msg ?? JSON.stringify(problem));
    })));
  } else {
    box.appendChild(h("p", {}, describe(detail, "")));
  }
  return box;
}

export function showError(container, err) {
  container.replaceChildren(errorList(err && err.detail !== undefined && err.detail !== null ? err.detail
    : (err && err.message) || String(err)));
}

export function toast(message, kind = "info") {
  const region = document.getElementById("toasts");
  if (!region) return;
  const item = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  region.appendChild(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

export function navigate(hash) {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = hash;
}

const pad = (n) => String(n).padStart(2, "0");

export function formatTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function formatDuration(value, unit = "s") {
  if (value === null || value === undefined || value === "" || Number.isNaN(Number(value))) return "—";
  const ms = unit === "ms" ? Number(value) : Number(value) * 1000;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  let seconds = Math.round(ms / 1000);
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
  const hours = Math.floor(seconds / 3600);
  seconds -= hours * 3600;
  const minutes = Math.floor(seconds / 60);
  seconds -= minutes * 60;
  return hours ? `${hours}h ${pad(minutes)}m` : `${minutes}m ${pad(seconds)}s`;
}

export function durationBetween(start, end) {
  if (!start) return null;
  const stop = end ? new Date(end) : new Date();
  return (stop - new Date(start)) / 1000;
}

let cleanups = [];
export function registerCleanup(fn) {
  cleanups.push(fn);
}
export function runCleanups() {
  const pending = cleanups;
  cleanups = [];
  for (const fn of pending) {
    try { fn(); } catch (err) { console.error(err); }
  }
}

export function sse(path, handlers = {}) {
  const source = new EventSource(API_BASE + path, { withCredentials: true });
  for (const [name, fn] of Object.entries(handlers)) {
    if (name === "open") source.addEventListener("open", fn);
    else if (name === "error") source.addEventListener("error", fn);
    else {
      source.addEventListener(name, (event) => {
        let data = event.data;
        try { data = JSON.parse(event.data); } catch { /* plain text */ }
        fn(data, event);
      });
    }
  }
  let closed = false;
  const close = () => {
    if (!closed) { closed = true; source.close(); }
  };
  registerCleanup(close);
  return close;
}

export function statusBadge(status) {
  const text = status || "unknown";
  return h("span", { class: `badge status-${String(text).replace(/[^a-z_]/gi, "")}` }, text);
}

let meCache = null;
export function me({ refresh = false } = {}) {
  if (!meCache || refresh) {
    meCache = api("GET", "/users/me").catch((err) => { meCache = null; throw err; });
  }
  return meCache;
}
export function forgetMe() {
  meCache = null;
}

export function pageHeader(title, ...actions) {
  return h("header", { class: "page-header" }, h("h1", { tabindex: "-1" }, title),
    actions.length ? h("div", { class: "actions" }, actions) : null);
}

export function table(columns, rows, { empty = "Nothing here yet.", caption } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("div", { class: "table-wrap" }, h("table", { class: "data" },
    caption ? h("caption", { class: "visually-hidden" }, caption) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.label)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", { "data-label": c.label }, c.cell(row))))))));
}

let fieldCounter = 0;
export function field(label, control, hint) {
  if (!control.id) control.id = `field-${++fieldCounter}`;
  const hintEl = hint ? h("small", { class: "hint", id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintEl);
}

export function confirmAction(message) {
  return window.confirm(message);
}
