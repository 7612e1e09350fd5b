// Schedules (#/schedules): each cron schedule with its time zone, the next fire times Temporal
// computes, the last run, active or paused; pause / resume (PATCH is_active) and run now
// (POST /schedules/{id}/trigger).
import { api, field, formatTime, h, navigate, pageHeader, statusBadge, table, toast } from "../core.js";
import { actionButton, ensureOpsCss, errorRegion, select, timeEl } from "./ops_common.js";

export default async function render(root, params) {
  ensureOpsCss();
  const query = params.query || new URLSearchParams();
  const active = query.get("is_active") || "";
  const [page, pipelines] = await Promise.all([
    api("GET", "/schedules", { query: { is_active: active, limit: 200 } }),
    api("GET", "/pipelines", { query: { limit: 500 } }).catch(() => ({ data: [] })),
  ]);
  const names = new Map((pipelines.data || []).map((p) => [p.id, p.name]));
  const filter = select({ id: "filter-active", name: "is_active" },
    [["", "any"], ["true", "active"], ["false", "paused"]], active);
  filter.addEventListener("change", () => navigate(filter.value ? `#/schedules?is_active=${filter.value}` : "#/schedules"));
  const errors = errorRegion({ id: "schedules-errors" });
  const notice = h("div", { class: "ops-notice", role: "status", id: "schedules-notice" });
  const listBox = h("div", { id: "schedules-list" });
  root.append(
    pageHeader("Schedules"),
    h("p", { class: "muted" }, "Cron triggers of pipelines, each a Temporal Schedule. Times are shown in your browser's time zone."),
    h("form", { class: "toolbar", onsubmit: (e) => e.preventDefault() }, field("Show", filter)),
    errors, notice, listBox);

  let rows = page.data;
  const replace = (updated) => {
    rows = rows.map((r) => (r.id === updated.id ? updated : r));
    draw();
  };

  const columns = [
    { label: "Schedule", cell: (s) => h("div", {},
      h("a", { href: `#/pipelines/${s.pipeline_id}` }, names.get(s.pipeline_id) || `pipeline ${s.pipeline_id}`),
      s.description ? h("div", { class: "muted" }, s.description) : null,
      // a schedule kept by the pipeline document: say so once (its default description already does)
      s.source === "document" && !(s.description || "").includes("pipeline document")
        ? h("div", { class: "muted" }, "from the pipeline document") : null) },
    { label: "Cron", cell: (s) => h("span", { class: "cron" }, s.cron) },
    { label: "Time zone", cell: (s) => s.timezone },
    { label: "Next fires", cell: (s) => nextFires(s) },
    { label: "Last run", cell: (s) => (s.last_run
      ? h("div", {}, h("a", { href: `#/runs/${s.last_run.id}` }, `#${s.last_run.run_number}`), " ",
        statusBadge(s.last_run.status), h("div", { class: "muted" }, formatTime(s.last_run.started_at || s.last_run_at)))
      : h("span", { class: "muted" }, "never")) },
    { label: "State", cell: (s) => h("div", {}, statusBadge(s.is_active ? "active" : "paused"),
      s.temporal_state !== (s.is_active ? "scheduled" : "paused")
        ? h("div", { class: "muted" }, `Temporal: ${s.temporal_state}`) : null) },
    { label: "Actions", cell: (s) => h("div", { class: "cell-actions" },
      actionButton(s.is_active ? "Pause" : "Resume", async () => {
        const updated = await api("PATCH", `/schedules/${s.id}`, { json: { is_active: !s.is_active } });
        toast(updated.is_active ? `Schedule ${s.id} resumed` : `Schedule ${s.id} paused`, "success");
        replace(updated);
      }, { errors, ariaLabel: `${s.is_active ? "Pause" : "Resume"} schedule ${s.id} (${s.cron})` }),
      actionButton("Run now", async () => {
        const answer = await api("POST", `/schedules/${s.id}/trigger`);
        if (answer.run) {
          notice.replaceChildren("Schedule ", String(s.id), " started run ",
            h("a", { href: `#/runs/${answer.run.id}` }, `#${answer.run.run_number}`), ".");
        } else {
          notice.replaceChildren(`Schedule ${s.id} fired (${answer.trigger_workflow_id || "trigger workflow"}); the run will appear under Runs.`);
        }
        replace(answer.schedule);
      }, { kind: "primary", errors, ariaLabel: `Run schedule ${s.id} now` })) },
  ];

  function draw() {
    listBox.replaceChildren(table(columns, rows, { empty: "No schedules. Create one with POST /schedules or triggers.schedule in a pipeline document.", caption: "Schedules" }));
  }
  draw();
}

function nextFires(schedule) {
  const times = schedule.next_run_times || [];
  if (!times.length) {
    return h("span", { class: "muted" }, schedule.is_active ? `none (${schedule.temporal_state})` : "paused");
  }
  return h("ol", { class: "next-fires", "aria-label": `Next fire times of schedule ${schedule.id}` },
    times.map((t) => h("li", {}, timeEl(t, formatTime(t)))));
}
