// Runs: the list with filters and live updates (#/runs), and one run (#/runs/:id): its steps,
// live log tail with ANSI colours, cancel / retry / retry from a step, the Temporal UI link.
import {
  api, durationBetween, field, formatDuration, formatTime, h, navigate, pageHeader, registerCleanup, showError,
  sse, statusBadge, table, toast,
} from "../core.js";
import { fresh, renderAnsi } from "../ansi.js";

const RUN_STATUSES = ["pending", "queued", "running", "success", "failure", "cancelled"];
const FINISHED = new Set(["success", "failure", "cancelled"]);

export default async function render(root, params) {
  if (params.id) return renderRun(root, params.id);
  return renderList(root, params.query || new URLSearchParams());
}

function debounce(fn, ms) {
  let timer = null;
  const wrapped = () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
  registerCleanup(() => clearTimeout(timer));
  return wrapped;
}

// ------------------------------------------------------------------ list

async function renderList(root, query) {
  const status = query.get("status") || "";
  const pipelineId = query.get("pipeline_id") || "";
  const pipelines = (await api("GET", "/pipelines", { query: { limit: 500 } })).data;
  const names = new Map(pipelines.map((p) => [p.id, p.name]));
  const statusSelect = h("select", { id: "filter-status", name: "status" },
    h("option", { value: "" }, "any"), RUN_STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)));
  const pipelineSelect = h("select", { id: "filter-pipeline", name: "pipeline_id" },
    h("option", { value: "" }, "any"),
    pipelines.map((p) => h("option", { value: String(p.id), selected: String(p.id) === pipelineId }, p.name)));
  const apply = () => {
    const next = new URLSearchParams();
    if (statusSelect.value) next.set("status", statusSelect.value);
    if (pipelineSelect.value) next.set("pipeline_id", pipelineSelect.value);
    navigate(`#/runs${next.toString() ? `?${next}` : ""}`);
  };
  statusSelect.addEventListener("change", apply);
  pipelineSelect.addEventListener("change", apply);
  const live = h("span", { class: "live", role: "status" }, "connecting…");
  const listBox = h("div", { id: "runs-list" });
  root.append(pageHeader("Runs", live),
    h("form", { class: "toolbar", onsubmit: (e) => { e.preventDefault(); apply(); } },
      field("Status", statusSelect), field("Pipeline", pipelineSelect)),
    listBox);

  let rows = [];
  let cursor = null;
  const columns = [
    { label: "Run", cell: (r) => h("a", { href: `#/runs/${r.id}` }, `#${r.run_number}`) },
    { label: "Pipeline", cell: (r) => h("a", { href: `#/pipelines/${r.pipeline_id}` }, names.get(r.pipeline_id) || `pipeline ${r.pipeline_id}`) },
    { label: "Status", cell: (r) => statusBadge(r.status) },
    { label: "Trigger", cell: (r) => r.trigger_type },
    { label: "Started", cell: (r) => formatTime(r.started_at || r.created_at) },
    { label: "Duration", cell: (r) => formatDuration(r.duration_seconds ?? durationBetween(r.started_at, r.finished_at)) },
  ];
  const draw = () => {
    const more = cursor ? h("button", { type: "button", onclick: async () => {
      const page = await api("GET", "/pipeline_runs", { query: { status, pipeline_id: pipelineId, cursor, limit: 50 } });
      rows = rows.concat(page.data);
      cursor = page.next_cursor;
      draw();
    } }, "Older runs") : null;
    listBox.replaceChildren(...[table(columns, rows, { empty: "No runs match.", caption: "Runs" }), more].filter(Boolean));
  };
  const load = async () => {
    const page = await api("GET", "/pipeline_runs", { query: { status, pipeline_id: pipelineId, limit: 50 } });
    rows = page.data;
    cursor = page.next_cursor;
    draw();
  };
  await load();
  const reload = debounce(() => load().catch(() => {}), 250);
  sse(`/pipeline_runs/stream${pipelineId ? `?pipeline_id=${encodeURIComponent(pipelineId)}` : ""}`, {
    open: () => { live.textContent = "live"; },
    error: () => { live.textContent = "reconnecting…"; },
    run_created: reload, run_updated: reload, run_completed: reload, step_started: reload, step_completed: reload,
  });
}

// ------------------------------------------------------------------ one run

async function renderRun(root, id) {
  let run = await api("GET", `/pipeline_runs/${encodeURIComponent(id)}`);
  const pipeline = await api("GET", `/pipelines/${run.pipeline_id}`).catch(() => null);
  const title = `${pipeline ? pipeline.name : `Pipeline ${run.pipeline_id}`} — run #${run.run_number}`;
  const summary = h("section", { class: "card", "aria-label": "Run summary" });
  const actions = h("div", { class: "actions" });
  const stepsBox = h("section", { "aria-labelledby": "steps-title" });
  const logState = h("span", { class: "live", id: "log-state", role: "status" }, "connecting…");
  const log = h("pre", { class: "log", id: "run-log", tabindex: "0", "aria-label": "Run log" });
  const problems = h("div", { "aria-live": "polite" });
  root.append(pageHeader(title), summary, actions, problems, stepsBox,
    h("section", { "aria-labelledby": "log-title" },
      h("div", { class: "page-header" }, h("h2", { id: "log-title" }, "Log"), logState), log));

  const draw = () => {
    summary.replaceChildren(h("dl", { class: "facts" },
      h("dt", {}, "Status"), h("dd", { id: "run-status", "aria-live": "polite" }, statusBadge(run.status)),
      h("dt", {}, "Trigger"), h("dd", {}, run.trigger_type),
      h("dt", {}, "Started"), h("dd", {}, formatTime(run.started_at || run.created_at)),
      h("dt", {}, "Finished"), h("dd", {}, formatTime(run.finished_at)),
      h("dt", {}, "Duration"), h("dd", {}, formatDuration(run.duration_seconds ?? durationBetween(run.started_at, run.finished_at))),
      Object.keys(run.inputs || {}).length ? [h("dt", {}, "Inputs"), h("dd", { class: "mono" }, JSON.stringify(run.inputs))] : null,
      run.retry_of_run_id ? [h("dt", {}, "Retry of"), h("dd", {}, h("a", { href: `#/runs/${run.retry_of_run_id}` }, `run ${run.retry_of_run_id}`),
        run.from_step ? ` from step ${run.from_step}` : "")] : null,
      h("dt", {}, "Workflow"), h("dd", {}, h("span", { class: "mono" }, run.workflow_id), " ",
        h("a", { href: run.temporal_ui_url, target: "_blank", rel: "noopener noreferrer" }, "Open in Temporal UI")),
      run.error ? [h("dt", {}, "Error"), h("dd", { class: "step-error" }, run.error)] : null));
    actions.replaceChildren(...runActions(run, problems));
    stepsBox.replaceChildren(h("h2", { id: "steps-title" }, "Steps"), stepsList(run));
  };
  draw();

  const refresh = debounce(async () => {
    try {
      run = await api("GET", `/pipeline_runs/${run.id}`);
      draw();
    } catch { /* the next event tries again */ }
  }, 150);
  const closeEvents = sse(`/pipeline_runs/stream?run_id=${run.id}`, {
    run_updated: refresh, run_completed: refresh, step_started: refresh, step_completed: refresh,
    approval_requested: refresh, approval_decided: refresh,
  });
  tailLog(run.id, log, logState, async (end) => {
    closeEvents();
    run = await api("GET", `/pipeline_runs/${run.id}`);
    if (end && end.status && run.status !== end.status) run.status = end.status;
    draw();
  });
}

function runActions(run, problems) {
  const buttons = [];
  const act = (label, cls, fn) => h("button", { type: "button", class: cls, onclick: async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    problems.replaceChildren();
    try { await fn(); } catch (err) { showError(problems, err); } finally { button.disabled = false; }
  } }, label);
  if (!FINISHED.has(run.status)) {
    buttons.push(act("Cancel run", "danger", async () => {
      await api("POST", `/pipeline_runs/${run.id}/cancel`);
      toast("Cancellation requested", "info");
    }));
  } else {
    buttons.push(act("Retry run", "primary", async () => {
      const next = await api("POST", `/pipeline_runs/${run.id}/retry`);
      toast(`Run #${next.run_number} started`, "success");
      navigate(`#/runs/${next.id}`);
    }));
    const steps = run.steps || [];
    if (steps.length > 1) {
      const select = h("select", { id: "retry-from" }, steps.map((s) => h("option", { value: s.step_id }, s.name || s.step_id)));
      buttons.push(h("form", { class: "toolbar", onsubmit: (e) => e.preventDefault() },
        field("Retry from step", select),
        act("Retry from step", "", async () => {
          const next = await api("POST", `/pipeline_runs/${run.id}/retry`, { query: { from_step: select.value } });
          toast(`Run #${next.run_number} started from ${select.value}`, "success");
          navigate(`#/runs/${next.id}`);
        })));
    }
  }
  return buttons;
}

function stepsList(run) {
  const steps = run.steps || [];
  if (!steps.length) return h("p", { class: "empty" }, "No steps recorded yet.");
  return h("ol", { class: "steps" }, steps.map((step) => h("li", { "data-step": step.step_id },
    h("div", { class: "step-head" }, statusBadge(step.status), h("span", { class: "name" }, step.name || step.step_id),
      h("span", { class: "mono muted" }, step.type),
      h("span", { class: "step-meta" }, `${formatDuration(durationBetween(step.started_at, step.finished_at))}`,
        step.attempts > 1 ? ` · ${step.attempts} attempts` : "", step.reused_from_run_id ? ` · reused from run ${step.reused_from_run_id}` : "")),
    step.error ? h("p", { class: "step-error" }, step.error) : null,
    Object.keys(step.outputs || {}).length ? h("dl", { class: "facts outputs" },
      Object.entries(step.outputs).map(([k, v]) => [h("dt", { class: "mono" }, k),
        h("dd", { class: "mono" }, typeof v === "string" ? v : JSON.stringify(v))])) : null,
    step.status === "waiting_approval" ? h("p", {}, "Waiting for approval. ", h("a", { href: "#/approvals" }, "Open approvals")) : null,
    step.approval && step.approval.decisions.length ? h("ul", {}, step.approval.decisions.map((d) =>
      h("li", {}, statusBadge(d.decision), ` by ${d.decided_by} at ${formatTime(d.created_at)}`, d.comment ? `: “${d.comment}”` : ""))) : null,
    step.history && step.history.length > 1 ? h("details", {}, h("summary", {}, "Attempts"),
      h("ol", {}, step.history.map((a) => h("li", {}, statusBadge(a.status), ` ${formatDuration(durationBetween(a.started_at, a.finished_at))}`,
        a.error ? ` — ${a.error}` : "")))) : null)));
}

function tailLog(runId, log, state, onEnd) {
  let lastStep = null;
  let style = fresh(); // colours carry over lines within one step attempt, as in a terminal
  let ended = false;
  const close = sse(`/pipeline_runs/${runId}/logs/stream`, {
    open: () => { if (!ended) state.textContent = "live"; },
    error: () => { if (!ended) state.textContent = "reconnecting…"; },
    log: (data) => {
      const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      const key = `${data.step_id}#${data.attempt}`;
      if (key !== lastStep) {
        lastStep = key;
        style = fresh();
        log.appendChild(h("span", { class: "log-step" }, `── ${data.step_id}${data.attempt > 1 ? ` (attempt ${data.attempt})` : ""} ──\n`));
      }
      const line = h("span", { class: "log-line" });
      line.append(...renderAnsi(data.line, style), "\n");
      log.appendChild(line);
      if (nearBottom) log.scrollTop = log.scrollHeight;
    },
    end: (data) => {
      ended = true;
      close(); // or EventSource reconnects and gets `end` again
      state.replaceChildren("finished: ", statusBadge(data.status));
      if (!log.childNodes.length) log.appendChild(h("span", { class: "log-empty" }, "No log lines were written."));
      onEnd(data).catch(() => {});
    },
  });
}
