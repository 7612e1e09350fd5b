// Docker Swarm (#/swarm): clusters with their services, and the rollouts; one rollout
// (#/swarm/deployments/:id): status, strategy, the canary weight, its steps, analysis results and
// its events as a timeline, with promote / abort / pause / resume. Refreshed every 2 s until it ends.
import {
  api, confirmAction, durationBetween, field, formatDuration, formatTime, h, pageHeader, statusBadge, table, toast,
} from "../core.js";
import {
  actionButton, fill, ensureOpsCss, errorRegion, facts, poll, setAllowed, shortJson, statusLine, timeEl,
} from "./ops_common.js";

const FINISHED = new Set(["completed", "aborted", "failed", "rolled_back"]);
const REFRESH_MS = 2000;

export default async function render(root, params) {
  ensureOpsCss();
  if (params.sub === "deployments" && params.id) return renderDeployment(root, params.id);
  return renderOverview(root);
}

// ------------------------------------------------------------------ overview

async function renderOverview(root) {
  const [clusters, deployments] = await Promise.all([
    api("GET", "/swarm/clusters", { query: { limit: 500 } }),
    api("GET", "/swarm/deployments", { query: { limit: 50 } }),
  ]);
  const clusterNames = new Map(clusters.data.map((c) => [c.id, c.name]));
  const errors = errorRegion({ id: "swarm-errors" });
  const clustersBox = h("div", { id: "swarm-clusters" });
  const deploymentsBox = h("div", { id: "swarm-deployments" });
  root.append(pageHeader("Docker Swarm"), errors,
    h("section", { "aria-labelledby": "deployments-title" }, h("h2", { id: "deployments-title" }, "Rollouts"), deploymentsBox),
    h("section", { "aria-labelledby": "clusters-title" }, h("h2", { id: "clusters-title" }, "Clusters"), clustersBox));

  let rows = deployments.data;
  const columns = [
    { label: "Rollout", cell: (d) => h("a", { href: `#/swarm/deployments/${d.id}` }, `#${d.id} ${d.service}`) },
    { label: "Cluster", cell: (d) => clusterNames.get(d.cluster_id) || `cluster ${d.cluster_id}` },
    { label: "Strategy", cell: (d) => d.strategy.replace("_", "/") },
    { label: "Status", cell: (d) => statusBadge(d.status) },
    { label: "Progress", cell: (d) => progressText(d) },
    { label: "Image", cell: (d) => h("span", { class: "mono" }, d.image || "—") },
    { label: "Started", cell: (d) => formatTime(d.started_at || d.created_at) },
  ];
  const drawDeployments = () => deploymentsBox.replaceChildren(table(columns, rows, {
    empty: "No rollouts yet: start one with POST /swarm/deployments.", caption: "Rollouts" }));
  drawDeployments();
  poll(async () => {
    if (!rows.some((d) => !FINISHED.has(d.status))) return true;
    rows = (await api("GET", "/swarm/deployments", { query: { limit: 50 } })).data;
    drawDeployments();
    return true;
  }, 5000, deploymentsBox);

  if (!clusters.data.length) {
    clustersBox.replaceChildren(h("p", { class: "empty" }, "No clusters yet: register a manager with POST /swarm/clusters."));
    return;
  }
  clustersBox.replaceChildren(...clusters.data.map((c) => clusterCard(c, errors)));
}

function progressText(d) {
  const state = d.state || {};
  const total = (d.config && d.config.steps ? d.config.steps.length : state.steps) || 0;
  const parts = [];
  if (FINISHED.has(d.status)) {
    if (d.status === "completed") return total ? `all ${total} steps done, promoted` : "done";
    return total && d.current_step !== null && d.current_step !== undefined
      ? `stopped at step ${d.current_step + 1}/${total}` : "stopped";
  }
  if (d.strategy === "canary" && state.weight !== undefined && state.weight !== null) parts.push(`weight ${state.weight}%`);
  if (total && d.current_step !== null && d.current_step !== undefined) parts.push(`step ${d.current_step + 1}/${total}`);
  if (state.phase && !FINISHED.has(d.status)) parts.push(state.phase);
  return parts.join(" · ") || "—";
}

function clusterCard(cluster, errors) {
  const services = h("div", { "aria-live": "polite" }, h("p", { class: "muted" }, "Loading services…"));
  const source = statusLine();
  const load = async () => {
    let page;
    try {
      page = await api("GET", `/swarm/clusters/${cluster.id}/services`, { query: { live: true } });
      source.textContent = `${page.count} service${page.count === 1 ? "" : "s"}, read from the manager now.`;
    } catch (err) {
      page = await api("GET", `/swarm/clusters/${cluster.id}/services`).catch(() => ({ data: [], count: 0 }));
      source.textContent = `The manager did not answer (${err.message}); ${page.count} services from the last sync.`;
    }
    services.replaceChildren(table([
      { label: "Service", cell: (s) => h("span", { class: "mono" }, s.name) },
      { label: "Image", cell: (s) => h("span", { class: "mono" }, shortJson(s.image, 80)) },
      { label: "Mode", cell: (s) => s.mode },
      { label: "Tasks", cell: (s) => (s.replicas === null || s.replicas === undefined
        ? `${s.running_tasks} running` : `${s.running_tasks}/${s.replicas} running`) },
      { label: "Stack", cell: (s) => s.stack_name || "—" },
    ], page.data, { empty: "No services.", caption: `Services of ${cluster.name}` }));
  };
  const info = h("div", {});
  const drawInfo = (c) => fill(info, facts([
    ["Status", statusBadge(c.status)],
    ["Manager", h("span", { class: "mono" }, c.endpoint)],
    ["Environment", c.environment],
    ["Nodes", String(c.nodes)],
    ["Services", String(c.services)],
    ["Last sync", formatTime(c.last_synced_at)],
    ["Last error", c.last_error || null],
  ]));
  drawInfo(cluster);
  const card = h("section", { class: "card cluster-card", "aria-labelledby": `cluster-${cluster.id}-name`, "data-cluster-id": String(cluster.id) },
    h("div", { class: "section-head" }, h("h2", { id: `cluster-${cluster.id}-name` }, cluster.name),
      h("div", { class: "cell-actions" },
        actionButton("Sync now", async () => {
          const answer = await api("POST", `/swarm/clusters/${cluster.id}/sync`);
          toast(answer.status === "running" ? `${cluster.name}: sync still running`
            : answer.ok === false ? `${cluster.name}: sync failed (${answer.error})` : `${cluster.name}: synced`,
          answer.ok === false ? "error" : "success");
          drawInfo(await api("GET", `/swarm/clusters/${cluster.id}`));
          await load();
        }, { errors, ariaLabel: `Sync cluster ${cluster.name} now`, busyText: "Syncing…" }),
        actionButton("Refresh", load, { errors, ariaLabel: `Refresh the services of ${cluster.name}` }))),
    info,
    h("h3", {}, "Services"), source, services);
  load().catch((err) => services.replaceChildren(h("p", { class: "errors", role: "alert" }, err.message)));
  return card;
}

// ------------------------------------------------------------------ one rollout

function describeStep(step) {
  if (!step || typeof step !== "object") return String(step);
  if ("set_weight" in step) return `Set the canary weight to ${step.set_weight}%`;
  if ("pause" in step) {
    const duration = step.pause && step.pause.duration;
    return duration ? `Pause for ${duration}` : "Pause until promoted";
  }
  if ("analysis" in step) {
    const a = step.analysis || {};
    const what = a.metrics ? a.metrics.map((m) => m.name || m.provider).join(", ")
      : a.http ? `tasks + HTTP :${a.http.port}${a.http.path || "/"}` : "task health";
    return `Analysis of ${what}: ${a.count ?? 3} checks every ${a.interval ?? 1}s, failure limit ${a.failure_limit ?? 0}`;
  }
  return shortJson(step);
}

const EVENT_TEXT = {
  rollout_started: (p) => [`Rollout started (revision ${p.revision ?? "?"})`, p.image ? ` ${p.image}` : ""],
  step_started: (p) => [`Step ${p.step + 1} started`, `: ${describeStep(p.spec)}`],
  step_completed: (p) => [`Step ${p.step + 1} completed`, p.kind ? ` (${p.kind})` : ""],
  weight_set: (p) => [`Canary weight ${p.weight}%`,
    ` — actual ${p.actual}%, ${p.canary_replicas ?? "?"} canary replica${p.canary_replicas === 1 ? "" : "s"}`],
  weight_warning: (p) => [`Weight warning`, `: ${p.message || `${p.weight}% asked, ${p.actual}% reached`}`],
  paused: (p) => [`Paused`, ` (${p.kind}${p.until ? ` until ${formatTime(p.until)}` : ", waiting for promote"})`],
  resumed: (p) => [`Resumed`, ` by ${p.by}`],
  analysis_metric: (p) => [`Analysis ${p.metric}: ${p.result}`,
    p.measurements ? ` (${p.measurements.map((m) => m.value).join(", ")})` : ""],
  analysis_completed: (p) => [`Analysis result: ${p.result}`, p.phase ? ` (${p.phase})` : ""],
  promotion_started: (p) => [`Promotion started`, p.revision ? ` (revision ${p.revision})` : ""],
  stable_update_started: () => [`Stable service update started`, ""],
  stable_update_finished: (p) => [`Stable service updated`, p.state ? ` (${p.state})` : ""],
  new_revision_removed: (p) => [`${p.service} removed`, p.because ? ` because ${p.because}` : ""],
  healthy: (p) => [`${p.service} healthy`, p.running !== undefined ? ` (${p.running} running)` : ""],
  health_failed: (p) => [`${p.service} unhealthy`, p.detail ? `: ${p.detail}` : ""],
  green_created: (p) => [`Green ${p.service} created`, ` (${p.replicas} replicas)`],
  traffic_switched: (p) => [`Traffic switched to ${p.to}`, p.switch_back ? " (switch back)" : ""],
  blue_scaled_down: (p) => [`Blue ${p.service} scaled to zero`, ""],
};

function eventClass(e) {
  if (e.event_type.startsWith("weight")) return "ev-weight";
  if (e.event_type.startsWith("analysis")) {
    return e.result === "failed" ? "ev-bad" : e.result === "successful" ? "ev-good" : "ev-analysis";
  }
  if (["rollout_completed", "healthy", "stable_update_finished"].includes(e.event_type)) return "ev-good";
  if (["rollout_failed", "rollout_aborted", "health_failed", "rollout_rolled_back"].includes(e.event_type)) return "ev-bad";
  return "";
}

function timelineItem(e) {
  const p = e.payload || {};
  let what;
  let more;
  if (EVENT_TEXT[e.event_type]) [what, more] = EVENT_TEXT[e.event_type](p);
  else if (e.event_type.startsWith("rollout_")) [what, more] = [`Rollout ${e.event_type.slice(8).replace("_", " ")}`, p.error ? `: ${p.error}` : ""];
  else [what, more] = [e.event_type.replaceAll("_", " "), Object.keys(p).length ? ` ${shortJson(p)}` : ""];
  return h("li", { class: eventClass(e), "data-event-type": e.event_type },
    h("span", { class: "when" }, timeEl(e.created_at, formatTime(e.created_at))),
    h("span", { class: "what" }, what), more ? more.replace(/^[:\s]+/, "") : null,
    e.result && !e.event_type.startsWith("analysis") ? [" ", statusBadge(e.result)] : null);
}

async function renderDeployment(root, id) {
  const errors = errorRegion({ id: "deployment-errors" });
  const announcer = h("p", { class: "visually-hidden", role: "status", "aria-live": "polite", id: "deployment-announcer" });
  const refreshLine = statusLine("", { id: "deployment-refresh" });
  const head = h("div", { class: "rollout-head" });
  const summary = h("div", { class: "card", id: "deployment-summary" });
  const stepsBox = h("section", { class: "card", "aria-labelledby": "steps-title" });
  const analysesBox = h("section", { class: "card", "aria-labelledby": "analyses-title", hidden: true });
  const timelineBox = h("section", { class: "card", "aria-labelledby": "timeline-title" });
  const reason = h("input", { id: "abort-reason", name: "reason", autocomplete: "off", maxlength: "1000",
    placeholder: "why (kept with the rollout)" });

  let deployment = await api("GET", `/swarm/deployments/${id}`);
  let events = [];
  let lastStatus = null;

  const control = (action, label, { kind = "", full = false, confirm } = {}) => actionButton(label, async () => {
    if (confirm && !confirmAction(confirm)) return;
    const body = action === "abort" ? { reason: reason.value.trim() } : full ? { full: true } : undefined;
    const answer = await api("POST", `/swarm/deployments/${id}/${action}`, { json: body });
    toast(`${label}: ${answer.message}`, "success");
    await refresh();
  }, { kind, errors, small: false, ariaLabel: `${label} rollout ${id}` });
  const buttons = {
    promote: control("promote", "Promote", { kind: "primary" }),
    promoteFull: control("promote", "Promote fully", { full: true,
      confirm: "Skip every remaining step and promote the new revision now?" }),
    pause: control("pause", "Pause"),
    resume: control("resume", "Resume"),
    abort: control("abort", "Abort", { kind: "danger", confirm: "Abort this rollout? The new revision is removed; the stable service stays as it is." }),
  };
  const controls = h("div", { class: "controls", role: "group", "aria-label": "Rollout controls" },
    buttons.promote, buttons.promoteFull, buttons.pause, buttons.resume, buttons.abort);

  root.append(
    h("p", {}, h("a", { href: "#/swarm" }, "← Docker Swarm")),
    pageHeader(`Rollout #${deployment.id}: ${deployment.service}`),
    head, refreshLine, announcer, errors,
    h("section", { class: "card", "aria-labelledby": "controls-title" }, h("h2", { id: "controls-title" }, "Control"),
      controls, h("div", { class: "form-row" }, field("Abort reason (optional)", reason))),
    h("div", { class: "rollout-grid" }, summary, stepsBox), analysesBox, timelineBox);

  function draw() {
    const d = deployment;
    const state = d.state || {};
    const finished = FINISHED.has(d.status);
    const canary = d.strategy === "canary";
    fill(head,
      h("span", { id: "deployment-status", "data-status": d.status }, statusBadge(d.status)),
      h("span", { class: "tag" }, `strategy: ${d.strategy.replace("_", "/")}`),
      state.phase && !finished ? h("span", { class: "muted", id: "deployment-phase" }, state.phase) : null,
      state.pause ? h("span", { class: "muted", id: "deployment-pause" },
        state.pause.kind === "step" && !state.pause.until ? "waiting for promote"
          : `${state.pause.kind} pause${state.pause.until ? ` until ${formatTime(state.pause.until)}` : ""}`) : null);

    const weight = state.weight ?? 0;
    fill(summary,
      h("h2", {}, "State"),
      canary ? h("div", { class: "weight" },
        h("span", { id: "weight-label" }, finished ? "Last canary weight" : "Canary weight"),
        h("span", { class: "value", id: "canary-weight", "data-weight": String(weight) }, `${weight}%`),
        h("meter", { min: "0", max: "100", value: String(weight), "aria-labelledby": "weight-label canary-weight" },
          `${weight}%`),
        !finished && state.actual_weight !== null && state.actual_weight !== undefined
          ? h("span", { class: "muted" }, `actual ${state.actual_weight}%`) : null,
        finished ? h("span", { class: "muted", id: "weight-outcome" }, d.status === "completed"
          ? "promoted: the stable service runs the new revision, the canary is removed"
          : "the canary is removed; the stable service keeps its revision") : null) : null,
      facts([
        ["Service", h("span", { class: "mono" }, d.service)],
        ["Image", d.image ? h("span", { class: "mono" }, d.image) : null],
        ["Digest", d.image_digest ? h("span", { class: "mono" }, d.image_digest) : null],
        ["Revision", d.revision !== null ? `${d.revision}${d.previous_revision ? ` (from ${d.previous_revision})` : ""}` : null],
        ["Replicas", state.replicas && Object.keys(state.replicas).length
          ? Object.entries(state.replicas).map(([k, v]) => `${k} ${v}`).join(", ") : null],
        ["Started", formatTime(d.started_at || d.created_at)],
        ["Finished", d.finished_at ? formatTime(d.finished_at) : null],
        ["Duration", d.started_at ? formatDuration(durationBetween(d.started_at, d.finished_at)) : null],
        ["Pipeline run", d.pipeline_run_id ? h("a", { href: `#/runs/${d.pipeline_run_id}` }, `run ${d.pipeline_run_id}`) : null],
        ["Error", d.error ? h("span", { class: "step-error" }, d.error) : null],
      ]),
      state.warnings && state.warnings.length
        ? h("ul", { class: "warnings", "aria-label": "Warnings" }, state.warnings.map((w) => h("li", {}, w))) : null);

    const steps = (d.config && d.config.steps) || [];
    const current = d.current_step ?? state.current_step;
    fill(stepsBox, h("h2", { id: "steps-title" }, "Steps"),
      steps.length ? h("ol", { class: "rollout-steps", id: "rollout-steps" }, steps.map((step, index) => {
        let stepState = "to do";
        if (d.status === "completed" || (current !== null && current !== undefined && index < current)) stepState = "done";
        else if (index === current && !finished) stepState = d.status === "paused" ? "paused here" : "running";
        else if (index === current && finished) stepState = d.status;
        return h("li", {
          class: stepState === "done" ? "step-done" : (stepState === "running" || stepState === "paused here") ? "step-current" : "",
          "aria-current": index === current && !finished ? "step" : null,
        }, h("span", {}, describeStep(step)), h("span", { class: "state" }, stepState));
      })) : h("p", { class: "muted" }, d.strategy === "rolling" ? "A rolling update: Swarm updates the tasks itself."
        : d.strategy === "blue_green" ? "Blue/green: green at full size, then the alias moves to it." : "No steps."));

    const analyses = state.analyses || [];
    analysesBox.hidden = !analyses.length;
    fill(analysesBox, h("h2", { id: "analyses-title" }, "Analysis results"), table([
      { label: "Step", cell: (a) => (a.step !== undefined && a.step !== null ? String(a.step + 1) : "—") },
      { label: "Phase", cell: (a) => a.phase || "—" },
      { label: "Metric", cell: (a) => a.metric },
      { label: "Result", cell: (a) => statusBadge(a.result) },
      { label: "Measurements", cell: (a) => (a.measurements || []).map((m) => `${m.value}${m.detail ? ` (${m.detail})` : ""}`).join("; ") || "—" },
    ], analyses, { caption: "Analysis results" }));

    fill(timelineBox, h("h2", { id: "timeline-title" }, "Timeline"),
      events.length ? h("ol", { class: "timeline", id: "rollout-timeline", "aria-label": "Rollout events, oldest first" },
        events.map(timelineItem)) : h("p", { class: "empty" }, "No events yet."));

    const can = {
      promote: d.status === "paused",
      pause: d.status === "progressing",
      resume: d.status === "paused" && state.pause && ["user", "inconclusive"].includes(state.pause.kind),
      abort: !finished && d.status !== "promoting",
    };
    setAllowed(buttons.promote, can.promote);
    setAllowed(buttons.promoteFull, can.promote && d.strategy === "canary");
    setAllowed(buttons.pause, can.pause);
    setAllowed(buttons.resume, can.resume);
    setAllowed(buttons.abort, can.abort);
    reason.disabled = finished;

    const said = finished ? `Ended ${formatTime(d.finished_at)}.` : "Live: refreshing every 2 s.";
    if (refreshLine.textContent !== said) refreshLine.textContent = said;
    if (lastStatus !== null && lastStatus !== d.status) announcer.textContent = `Rollout ${d.id} is now ${d.status}.`;
    lastStatus = d.status;
  }

  async function refresh() {
    const [fresh, page] = await Promise.all([
      api("GET", `/swarm/deployments/${id}`),
      api("GET", `/swarm/deployments/${id}/events`),
    ]);
    deployment = fresh;
    events = page.data;
    draw();
  }

  await refresh();
  poll(async () => {
    if (FINISHED.has(deployment.status)) return false;
    await refresh();
    return !FINISHED.has(deployment.status);
  }, REFRESH_MS, timelineBox);
}
