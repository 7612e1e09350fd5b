// Approvals (#/approvals): the gates waiting on me (GET /approvals), each with a comment box and
// Approve / Reject (POST /pipeline_runs/{id}/steps/{step_id}/approve|reject {comment}). Made to work
// on a phone: one card per gate, large buttons.
import {
  api, field, formatTime, h, pageHeader, registerCleanup, showError, sse, statusBadge, toast,
} from "../core.js";

export default async function render(root, params) {
  const showAll = params.query && params.query.get("status") === "all";
  const listBox = h("div", { id: "approvals-list" });
  const live = h("span", { class: "live", role: "status" }, "");
  root.append(pageHeader("Approvals", live,
    h("a", { class: "button small", href: showAll ? "#/approvals" : "#/approvals?status=all" },
      showAll ? "Only pending" : "History")),
  listBox);

  const load = async () => {
    const page = await api("GET", "/approvals", { query: { status: showAll ? "all" : "pending", limit: 100 } });
    if (!page.data.length) {
      listBox.replaceChildren(h("p", { class: "empty" }, showAll ? "No approvals were ever asked of you."
        : "Nothing waits on you."));
      return;
    }
    listBox.replaceChildren(...page.data.map((gate) => card(gate, load)));
  };
  await load();
  let timer = null;
  registerCleanup(() => clearTimeout(timer));
  const reload = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      // never yank a form from under someone typing a comment
      if (listBox.contains(document.activeElement) && document.activeElement.tagName === "TEXTAREA") return;
      load().catch(() => {});
    }, 300);
  };
  sse("/pipeline_runs/stream", {
    open: () => { live.textContent = "live"; },
    error: () => { live.textContent = "reconnecting…"; },
    approval_requested: reload, approval_decided: reload, run_completed: reload,
  });
}

function card(gate, reload) {
  const key = `${gate.run_id}-${gate.step_id}`;
  const comment = h("textarea", { id: `comment-${key}`, class: "comment", name: "comment", rows: 3, maxlength: 5000 });
  const problems = h("div", { "aria-live": "polite" });
  const pending = gate.status === "pending";
  const decide = (decision) => async (event) => {
    event.preventDefault();
    problems.replaceChildren();
    for (const b of buttons) b.disabled = true;
    try {
      const result = await api("POST", `/pipeline_runs/${gate.run_id}/steps/${encodeURIComponent(gate.step_id)}/${decision}`,
        { json: { comment: comment.value } });
      toast(`${decision === "approve" ? "Approved" : "Rejected"} ${gate.pipeline} #${gate.run_number} · ${gate.step_name}`
        + (result.outcome === "pending" ? ` (${result.approvals}/${result.required} approvals)` : ""), "success");
      await reload();
    } catch (err) {
      showError(problems, err);
      for (const b of buttons) b.disabled = false;
    }
  };
  const buttons = pending ? [
    h("button", { type: "submit", class: "primary", onclick: decide("approve") }, "Approve"),
    h("button", { type: "button", class: "danger", onclick: decide("reject") }, "Reject"),
  ] : [];
  const title = `${gate.pipeline} #${gate.run_number} · ${gate.step_name}`;
  return h("article", { class: "card approval", "aria-labelledby": `title-${key}`, "data-run": String(gate.run_id) },
    h("h2", { id: `title-${key}` }, h("a", { href: `#/runs/${gate.run_id}` }, title), " ", statusBadge(gate.status)),
    h("dl", { class: "facts" },
      h("dt", {}, "Requested"), h("dd", {}, formatTime(gate.requested_at)),
      h("dt", {}, "Expires"), h("dd", {}, formatTime(gate.expires_at)),
      h("dt", {}, "Approvals"), h("dd", {}, `${gate.approvals} of ${gate.required}`),
      h("dt", {}, "Recipients"), h("dd", {}, gate.recipients.join(", ")),
      gate.decided_by.length ? [h("dt", {}, "Decided by"), h("dd", {}, gate.decided_by.join(", "))] : null),
    pending ? h("form", { onsubmit: (e) => e.preventDefault() },
      field("Comment", comment, "Shown on the run; some gates require one."),
      problems,
      h("div", { class: "actions" }, buttons)) : null);
}
