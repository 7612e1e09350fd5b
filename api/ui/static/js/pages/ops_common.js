// Helpers shared by the operations pages (schedules, templates, containers, hosts, swarm).
// Built on core.js only; no innerHTML with data: every value is a text node or a DOM attribute.
import { errorList, h, registerCleanup, toast } from "../core.js";

const OPS_CSS = "/ui/static/css/ops.css";

/** Link the operations stylesheet once (CSP: a same-origin <link>, no inline styles). */
export function ensureOpsCss() {
  if (document.querySelector(`link[data-ops-css]`)) return;
  document.head.appendChild(h("link", { rel: "stylesheet", href: OPS_CSS, "data-ops-css": "" }));
}

/** Replace `el`'s children like `h` appends them: arrays flattened, null/false skipped. */
export function fill(el, ...children) {
  const holder = h("div", {}, ...children);
  el.replaceChildren(...Array.from(holder.childNodes));
  return el;
}

/** The readable text of an error (an ApiError's sentence, or anything thrown). */
export function errorText(err) {
  return (err && err.message) || String(err);
}

/** A region for errors of one part of a page: polite live region, emptied by `clear()`. */
export function errorRegion(attrs = {}) {
  const box = h("div", { class: "ops-errors", "aria-live": "polite", ...attrs });
  box.show = (err) => box.replaceChildren(errorList(err && err.detail !== undefined && err.detail !== null
    ? err.detail : errorText(err)));
  box.clear = () => box.replaceChildren();
  return box;
}

/**
 * A button that runs `action` once at a time: disabled (and aria-busy) while it runs. An error goes
 * to `errors` (an errorRegion) when given, else to an error toast.
 */
export function actionButton(label, action, { kind = "", title, ariaLabel, errors, small = true, busyText } = {}) {
  const button = h("button", {
    type: "button", class: [kind, small ? "small" : ""], title, "aria-label": ariaLabel,
  }, label);
  button.addEventListener("click", async () => {
    if (button.disabled) return;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    if (busyText) button.textContent = busyText;
    errors?.clear();
    try {
      await action(button);
    } catch (err) {
      if (errors) errors.show(err);
      else toast(errorText(err), "error");
    } finally {
      if (busyText) button.textContent = label;
      button.removeAttribute("aria-busy");
      button.disabled = button.dataset.allowed === "0";
    }
  });
  return button;
}

/** Enable or disable an actionButton; a running one takes this state when it finishes. */
export function setAllowed(button, allowed) {
  button.dataset.allowed = allowed ? "1" : "0";
  if (!button.hasAttribute("aria-busy")) button.disabled = !allowed;
}

/**
 * Call `tick` every `ms` milliseconds (one call at a time) until it returns `false`, the page is
 * left (registerCleanup) or `node` is no longer in the document. Returns a stop function.
 */
export function poll(tick, ms, node) {
  let timer = null;
  let stopped = false;
  const stop = () => {
    stopped = true;
    clearTimeout(timer);
  };
  const schedule = () => {
    if (!stopped) timer = setTimeout(run, ms);
  };
  const run = async () => {
    if (stopped) return;
    if (node && !node.isConnected) return stop();
    let more = true;
    try {
      more = (await tick()) !== false;
    } catch (err) {
      console.warn("refresh failed", err);
    }
    if (more) schedule();
    else stop();
  };
  registerCleanup(stop);
  schedule();
  return stop;
}

/** `<dl class="facts">` of [label, value] pairs (null values skipped). */
export function facts(pairs, attrs = {}) {
  return h("dl", { class: "facts", ...attrs }, pairs.filter((p) => p && p[1] !== null && p[1] !== undefined)
    .map(([label, value]) => [h("dt", {}, label), h("dd", {}, value)]));
}

/** A `<time>` element with the ISO value in `datetime` and the local time as text. */
export function timeEl(iso, text) {
  if (!iso) return "—";
  return h("time", { datetime: iso, title: iso }, text);
}

/** "1.5 MiB" for a byte count. */
export function formatBytes(value) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "—";
  let n = Number(value);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit += 1;
  }
  return `${unit ? n.toFixed(n < 10 ? 1 : 0) : n} ${units[unit]}`;
}

/** A select with [value, label] options (a plain string is both). */
export function select(attrs, options, current) {
  return h("select", attrs, options.map((o) => {
    const [value, label] = Array.isArray(o) ? o : [o, o];
    return h("option", { value, selected: String(value) === String(current ?? "") }, label);
  }));
}

/** Short text of any JSON value, for compact cells. */
export function shortJson(value, max = 160) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text && text.length > max ? `${text.slice(0, max - 1)}…` : (text ?? "");
}

/** A polite status line (role=status) whose text can be set. */
export function statusLine(text = "", attrs = {}) {
  return h("p", { class: "muted ops-status", role: "status", ...attrs }, text);
}
