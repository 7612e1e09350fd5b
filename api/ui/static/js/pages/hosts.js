// Docker hosts (#/hosts): each registered engine with its status and sync; a host (#/hosts/:id)
// with its containers (start / stop / restart, logs), a sync button and a connection test.
import { api, formatTime, h, pageHeader, statusBadge, table, toast } from "../core.js";
import { actionButton, fill, ensureOpsCss, errorRegion, facts, statusLine } from "./ops_common.js";

export default async function render(root, params) {
  ensureOpsCss();
  if (params.id) return renderHost(root, params.id);
  return renderList(root);
}

function syncSummary(answer) {
  if (answer.status === "running") return "The sync round is still running; it finishes in the background.";
  if (answer.ok === false) return `Sync failed: ${answer.error || "the engine could not be reached"}`;
  const c = answer.containers || {};
  const i = answer.images || {};
  return `Synced: containers ${c.created ?? 0} new, ${c.updated ?? 0} changed, ${c.deleted ?? 0} gone; ` +
    `images ${i.created ?? 0} new, ${i.updated ?? 0} changed, ${i.deleted ?? 0} gone; ${answer.events ?? 0} events.`;
}

async function renderList(root) {
  const errors = errorRegion({ id: "hosts-errors" });
  const notice = h("div", { class: "ops-notice", role: "status", id: "hosts-notice" });
  const listBox = h("div", { id: "hosts-list" });
  root.append(pageHeader("Docker hosts"), errors, notice, listBox);
  let rows = (await api("GET", "/docker/hosts", { query: { limit: 500 } })).data;
  const columns = [
    { label: "Host", cell: (x) => h("div", {}, h("a", { href: `#/hosts/${x.id}` }, x.name),
      h("div", { class: "muted mono" }, x.endpoint)) },
    { label: "Environment", cell: (x) => x.environment },
    { label: "Status", cell: (x) => h("div", {}, statusBadge(x.status),
      x.last_error ? h("div", { class: "muted" }, x.last_error) : null) },
    { label: "Containers", cell: (x) => String(x.containers) },
    { label: "Images", cell: (x) => String(x.images) },
    { label: "Last sync", cell: (x) => h("div", {}, formatTime(x.last_synced_at),
      h("div", { class: "muted" }, x.auto_sync ? `every ${x.sync_interval_seconds} s` : "manual")) },
    { label: "Actions", cell: (x) => h("div", { class: "cell-actions" }, actionButton("Sync now", async () => {
      const answer = await api("POST", `/docker/hosts/${x.id}/sync`);
      notice.textContent = `${x.name}: ${syncSummary(answer)}`;
      const fresh = await api("GET", `/docker/hosts/${x.id}`);
      rows = rows.map((r) => (r.id === fresh.id ? fresh : r));
      draw();
    }, { errors, ariaLabel: `Sync host ${x.name} now`, busyText: "Syncing…" })) },
  ];
  const draw = () => listBox.replaceChildren(table(columns, rows, {
    empty: "No Docker hosts yet: register one with POST /docker/hosts.", caption: "Docker hosts" }));
  draw();
}

async function renderHost(root, id) {
  const host = await api("GET", `/docker/hosts/${id}`);
  const errors = errorRegion({ id: "host-errors" });
  const notice = h("div", { class: "ops-notice", role: "status", id: "host-notice" });
  const info = h("div", { class: "card" });
  const containersBox = h("div", { id: "host-containers" });
  const source = statusLine("", { id: "host-containers-source" });
  const logsBox = h("section", { class: "card", id: "container-logs", "aria-labelledby": "container-logs-title", hidden: true });

  const drawInfo = (x) => info.replaceChildren(facts([
    ["Status", statusBadge(x.status)],
    ["Endpoint", h("span", { class: "mono" }, x.endpoint)],
    ["Environment", x.environment],
    ["Sync", x.auto_sync ? `automatic, every ${x.sync_interval_seconds} s` : "manual"],
    ["Last sync", formatTime(x.last_synced_at)],
    ["Failures in a row", String(x.consecutive_failures)],
    ["Last error", x.last_error || null],
    ["TLS", x.tls_configured ? "configured" : "none"],
    ["Workflow", x.temporal_ui_url ? h("a", { href: x.temporal_ui_url, target: "_blank", rel: "noopener" }, x.workflow_id) : x.workflow_id],
  ]));
  drawInfo(host);

  const loadContainers = async () => {
    let page;
    try {
      page = await api("GET", `/docker/hosts/${id}/containers`, { query: { live: true } });
      source.textContent = `${page.count} container${page.count === 1 ? "" : "s"}, read from the engine now.`;
    } catch (err) {
      page = await api("GET", `/docker/hosts/${id}/containers`);
      source.textContent = `The engine did not answer (${err.message}); ${page.count} containers from the last sync.`;
    }
    drawContainers(page.data, page.live);
  };

  const act = (c, verb) => actionButton(verb[0].toUpperCase() + verb.slice(1), async () => {
    const state = await api("POST", `/docker/hosts/${id}/containers/${encodeURIComponent(c.container_id)}/${verb}`);
    toast(`${c.name}: ${verb} done, now ${state.state}`, "success");
    await loadContainers();
  }, { errors, kind: verb === "stop" ? "danger" : "", ariaLabel: `${verb} container ${c.name}`, busyText: `${verb}…` });

  const showLogs = async (c) => {
    const text = await api("GET", `/docker/hosts/${id}/containers/${encodeURIComponent(c.container_id)}/logs`, { query: { tail: 200 } });
    logsBox.hidden = false;
    fill(logsBox,
      h("div", { class: "section-head" }, h("h2", { id: "container-logs-title" }, `Logs of ${c.name}`, h("span", { class: "muted" }, " (last 200 lines)")),
        h("button", { type: "button", class: "small", onclick: () => { logsBox.hidden = true; } }, "Close logs")),
      h("pre", { class: "log", tabindex: "0" }, text.logs || "(empty)"));
    logsBox.querySelector("pre").focus();
  };

  function drawContainers(rows, live) {
    const columns = [
      { label: "Container", cell: (c) => h("div", {}, h("span", { class: "mono" }, c.name),
        h("div", { class: "muted mono" }, c.container_id.slice(0, 12))) },
      { label: "Image", cell: (c) => h("span", { class: "mono" }, c.image) },
      { label: "State", cell: (c) => h("div", {}, statusBadge(c.state), h("div", { class: "muted" }, c.status)) },
      { label: "Created", cell: (c) => formatTime(c.created) },
      { label: "Actions", cell: (c) => h("div", { class: "cell-actions" },
        c.state === "running" ? [act(c, "stop"), act(c, "restart")] : act(c, "start"),
        actionButton("Logs", () => showLogs(c), { errors, ariaLabel: `Logs of container ${c.name}` })) },
    ];
    containersBox.replaceChildren(table(columns, rows, {
      empty: live ? "No containers on this host." : "No containers synced yet: sync the host.", caption: "Containers" }));
  }

  const sync = actionButton("Sync now", async () => {
    const answer = await api("POST", `/docker/hosts/${id}/sync`);
    notice.textContent = syncSummary(answer);
    drawInfo(await api("GET", `/docker/hosts/${id}`));
    await loadContainers();
  }, { kind: "primary", small: false, errors, busyText: "Syncing…" });
  const test = actionButton("Test connection", async () => {
    const answer = await api("POST", `/docker/hosts/${id}/test`);
    notice.textContent = answer.ok
      ? `Connected: Docker ${answer.docker_version} (API ${answer.api_version}, ${answer.os}/${answer.architecture}).`
      : `Connection failed: ${answer.error}`;
  }, { small: false, errors });

  root.append(
    h("p", {}, h("a", { href: "#/hosts" }, "← Docker hosts")),
    pageHeader(`Host ${host.name}`, sync, test),
    errors, notice, info,
    h("div", { class: "section-head" }, h("h2", {}, "Containers"),
      actionButton("Refresh", loadContainers, { errors, ariaLabel: "Refresh the container list" })),
    source, containersBox, logsBox);
  await loadContainers();
}
