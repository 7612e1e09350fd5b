// Container executions (#/containers?status=&id=): the list with status, template / image and
// durations; a detail panel (?id=) with logs, usage, violations, artifacts and events, and cancel.
// Both refresh while something is still running.
import {
  api, confirmAction, durationBetween, field, formatDuration, formatTime, h, navigate, pageHeader, statusBadge, table, toast,
} from "../core.js";
import {
  actionButton, fill, ensureOpsCss, errorRegion, facts, formatBytes, poll, select, shortJson, statusLine,
} from "./ops_common.js";

const STATUSES = ["pending", "queued", "provisioning", "running", "completed", "failed", "cancelled", "timeout"];
const FINAL = new Set(["completed", "failed", "cancelled", "timeout"]);

export default async function render(root, params) {
  ensureOpsCss();
  const query = params.query || new URLSearchParams();
  const status = query.get("status") || "";
  const selected = query.get("id") || "";
  const hashFor = (next) => {
    const q = new URLSearchParams();
    if (next.status) q.set("status", next.status);
    if (next.id) q.set("id", next.id);
    return `#/containers${q.toString() ? `?${q}` : ""}`;
  };
  const [page, templates] = await Promise.all([
    api("GET", "/containers", { query: { status, limit: 100 } }),
    api("GET", "/container_templates", { query: { limit: 500 } }).catch(() => ({ data: [] })),
  ]);
  const templateNames = new Map((templates.data || []).map((t) => [t.id, t.name]));
  const filter = select({ id: "filter-status", name: "status" }, [["", "any"], ...STATUSES], status);
  filter.addEventListener("change", () => navigate(hashFor({ status: filter.value, id: selected })));
  const summary = statusLine("", { id: "containers-summary" });
  const listBox = h("div", { id: "containers-list" });
  const detail = h("section", { class: "card detail-panel", id: "container-detail", "aria-labelledby": "container-detail-title",
    hidden: !selected });
  root.append(
    pageHeader("Containers"),
    h("form", { class: "toolbar", onsubmit: (e) => e.preventDefault() }, field("Status", filter)),
    summary,
    h("div", { class: ["split", selected ? "has-detail" : ""] }, listBox, detail));

  let rows = page.data;
  let count = page.count;
  const all = [
    { label: "Execution", cell: (c) => h("a", { href: hashFor({ status, id: c.id }), "aria-current": String(c.id) === selected ? "true" : null,
      "aria-label": `Show container execution ${c.id} (${c.name})` }, `#${c.id}`,
    selected ? null : h("div", { class: "muted mono" }, c.name)) },
    { label: "Status", cell: (c) => h("div", {}, statusBadge(c.status),
      c.exit_code !== null && c.exit_code !== undefined ? h("div", { class: "muted" }, `exit ${c.exit_code}`) : null) },
    { label: "Template / image", cell: (c) => h("div", {},
      c.template_id ? h("div", {}, templateNames.get(c.template_id) || `template ${c.template_id}`) : null,
      h("div", { class: "mono" }, c.image)) },
    { label: "Run", cell: (c) => (c.run_id ? h("a", { href: `#/runs/${c.run_id}` }, `run ${c.run_id}`, c.step_id ? ` · ${c.step_id}` : "") : "—") },
    { label: "Created", cell: (c) => formatTime(c.created_at) },
    { label: "Duration", cell: (c) => (c.started_at ? formatDuration(durationBetween(c.started_at, c.finished_at)) : "—") },
  ];
  // beside the detail panel the list keeps its essential columns
  const columns = selected ? all.filter((c) => !["Run", "Created"].includes(c.label)) : all;
  const draw = () => {
    summary.textContent = `${count} execution${count === 1 ? "" : "s"}${status ? ` ${status}` : ""}.`;
    listBox.replaceChildren(table(columns, rows, { empty: "No container executions.", caption: "Container executions" }));
    for (const tr of listBox.querySelectorAll("tbody tr")) {
      if (tr.querySelector("a[aria-current]")) tr.classList.add("selected");
    }
  };
  draw();

  // The list follows executions that have not ended yet.
  poll(async () => {
    if (!rows.some((r) => !FINAL.has(r.status))) return true;
    const fresh = await api("GET", "/containers", { query: { status, limit: 100 } });
    rows = fresh.data;
    count = fresh.count;
    draw();
    return true;
  }, 3000, listBox);

  if (selected) await showDetail(detail, selected, (updated) => {
    rows = rows.map((r) => (r.id === updated.id ? { ...r, ...updated } : r));
    draw();
  });
}

async function showDetail(panel, id, onChange) {
  const errors = errorRegion();
  const live = statusLine("", { id: "container-live" });
  const body = h("div", {});
  fill(panel,
    h("div", { class: "section-head" }, h("h2", { id: "container-detail-title" }, `Execution #${id}`),
      h("a", { href: "#/containers", class: "button small", "aria-label": "Close the execution details" }, "Close")),
    live, errors, body);
  let last = null;
  // Built once, so keyboard focus stays on it across the 2 s refreshes.
  const cancel = actionButton("Cancel", async () => {
    if (!confirmAction(`Cancel execution ${id}? Its container is killed and removed.`)) return;
    const updated = await api("POST", `/containers/${id}/cancel`);
    toast(`Cancel requested for execution ${id}`, "success");
    last = updated;
    draw(updated);
    onChange(updated);
  }, { kind: "danger", errors, ariaLabel: `Cancel container execution ${id}` });
  const badge = h("span", {});
  const link = h("span", {});
  const logs = h("pre", { class: "log", tabindex: "0", "aria-label": `Logs of execution ${id}` });
  const rest = h("div", {});
  body.append(h("div", { class: "rollout-head" }, badge, cancel, link), h("div", { id: "container-facts" }),
    h("h3", {}, "Logs", h("span", { class: "muted", id: "logs-note" })), logs, rest);
  const draw = (c) => {
    const finished = FINAL.has(c.status);
    fill(badge, statusBadge(c.status));
    cancel.hidden = finished;
    fill(link, c.temporal_ui_url ? h("a", { href: c.temporal_ui_url, target: "_blank", rel: "noopener" }, "Temporal UI") : null);
    // the log keeps its scroll position unless it was at the end (then it follows new lines)
    const text = c.logs || "(no output yet)";
    if (logs.textContent !== text) {
      const atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
      logs.textContent = text;
      if (atEnd) logs.scrollTop = logs.scrollHeight;
    }
    body.querySelector("#logs-note").textContent = c.logs_truncated ? " (truncated at 100 KB)" : "";
    const usage = Object.entries(c.usage || {});
    fill(body.querySelector("#container-facts"),
      facts([
        ["Name", h("span", { class: "mono" }, c.name)],
        ["Image", h("span", { class: "mono" }, c.image)],
        ["Digest", c.image_digest ? h("span", { class: "mono" }, c.image_digest) : null],
        ["Command", c.spec && c.spec.command && c.spec.command.length ? h("span", { class: "mono" }, c.spec.command.join(" ")) : null],
        ["Exit code", c.exit_code ?? null],
        ["Error", c.error || null],
        ["Started", formatTime(c.started_at)],
        ["Finished", c.finished_at ? formatTime(c.finished_at) : null],
        ["Duration", c.started_at ? formatDuration(durationBetween(c.started_at, c.finished_at)) : null],
        ["Limits", `${c.reserved_cpu} CPU · ${c.reserved_memory_mb} MB memory · ${c.reserved_storage_mb} MB storage · ${c.timeout_seconds} s timeout`],
      ]));
    fill(rest,
      h("h3", {}, "Usage"),
      usage.length ? facts(usage.map(([k, v]) => [k.replaceAll("_", " "), k.endsWith("_bytes") ? formatBytes(v) : String(v)]))
        : h("p", { class: "empty" }, "No usage recorded yet."),
      c.violations && c.violations.length ? [h("h3", {}, "Violations"),
        h("ul", {}, c.violations.map((v) => h("li", {}, statusBadge(typeof v === "string" ? v : v.kind || v.type || "violation"),
          " ", typeof v === "string" ? "" : shortJson(v))))] : null,
      c.artifacts && c.artifacts.length ? [h("h3", {}, "Artifacts"), h("ul", {}, c.artifacts.map((a) => h("li", {},
        h("a", { href: a.download_path, download: "" }, a.name), ` ${formatBytes(a.size_bytes)}, ${a.entries} entries`)))] : null,
      h("h3", {}, "Events"),
      c.events && c.events.length ? h("ol", { class: "events" }, c.events.map((e) => h("li", {},
        h("span", { class: "muted" }, formatTime(e.created_at)), " ", h("strong", {}, e.event_type.replaceAll("_", " ")), " ",
        e.payload && e.payload.status ? statusBadge(e.payload.status) : null, " ", eventDetail(e.payload))))
        : h("p", { class: "empty" }, "No events yet."),
    );
    const said = finished ? `Ended: ${c.status}.` : `Live: ${c.status}, refreshing every 2 s.`;
    if (live.textContent !== said) live.textContent = said;
  };
  try {
    last = await api("GET", `/containers/${id}`);
  } catch (err) {
    errors.show(err);
    return;
  }
  draw(last);
  poll(async () => {
    if (FINAL.has(last.status)) return false;
    const fresh = await api("GET", `/containers/${id}`);
    const changed = fresh.status !== last.status;
    last = fresh;
    draw(fresh);
    if (changed) onChange(fresh);
    return !FINAL.has(fresh.status);
  }, 2000, panel);
}

function eventDetail(payload) {
  const p = { ...(payload || {}) };
  const moved = p.from && p.to ? `${p.from} → ${p.to}` : "";
  for (const key of ["status", "from", "to"]) delete p[key];
  const rest = Object.keys(p).length ? shortJson(p, 120) : "";
  return [moved ? h("span", {}, moved, " ") : null, rest ? h("span", { class: "mono muted" }, rest) : null];
}
