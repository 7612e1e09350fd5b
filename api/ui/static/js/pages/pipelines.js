// Pipelines: the list with an import form (#/pipelines), and one pipeline (#/pipelines/:id):
// its YAML, editable and saved with PUT, its declared inputs as a typed trigger form, its runs.
import {
  api, field, formatTime, h, navigate, pageHeader, showError, statusBadge, table, toast,
} from "../core.js";

const EXAMPLE = `name: hello
inputs:
  greeting: {type: string, default: hello}
steps:
  - id: say
    type: run_tests
    with:
      command: 'echo "$GREETING"'
      env: {GREETING: "\${{ inputs.greeting }}"}
`;

function documentType(text) {
  const first = text.trimStart()[0];
  return first === "{" ? "application/json" : "application/yaml";
}

export default async function render(root, params) {
  if (params.id) return renderPipeline(root, params.id);
  return renderList(root);
}

async function renderList(root) {
  const listBox = h("div", {});
  root.append(pageHeader("Pipelines"), listBox, importForm());
  const page = await api("GET", "/pipelines", { query: { limit: 500 } });
  listBox.replaceChildren(table([
    { label: "Name", cell: (p) => h("a", { href: `#/pipelines/${p.id}` }, p.name) },
    { label: "Slug", cell: (p) => h("span", { class: "mono" }, p.slug) },
    { label: "Type", cell: (p) => p.pipeline_type },
    { label: "Steps", cell: (p) => String(p.steps.length) },
    { label: "Active", cell: (p) => (p.is_active ? "yes" : "no") },
    { label: "Updated", cell: (p) => formatTime(p.updated_at) },
  ], page.data, { empty: "No pipelines yet: import one below.", caption: "Pipelines" }));
}

function importForm() {
  const text = h("textarea", { id: "import-document", class: "code", name: "document", spellcheck: "false",
    placeholder: EXAMPLE, rows: 14 });
  const file = h("input", { id: "import-file", type: "file", accept: ".yaml,.yml,.json,application/json,text/yaml",
    onchange: async () => {
      if (file.files && file.files[0]) text.value = await file.files[0].text();
    } });
  const problems = h("div", { id: "import-errors", "aria-live": "polite" });
  const form = h("form", { class: "card", "aria-labelledby": "import-title", onsubmit: async (event) => {
    event.preventDefault();
    problems.replaceChildren();
    const body = text.value;
    if (!body.trim()) {
      text.focus();
      return;
    }
    submit.disabled = true;
    try {
      const created = await api("POST", "/pipelines/import", {
        body, headers: { "Content-Type": documentType(body) },
      });
      toast(`Imported ${created.name}`, "success");
      navigate(`#/pipelines/${created.id}`);
    } catch (err) {
      showError(problems, err);
      text.focus();
    } finally {
      submit.disabled = false;
    }
  } });
  const submit = h("button", { type: "submit", class: "primary" }, "Import");
  form.append(
    h("h2", { id: "import-title" }, "Import a pipeline"),
    field("Pipeline document (YAML or JSON)", text, "A document as README \"Pipeline documents\" describes it."),
    field("…or load a file", file),
    problems,
    h("div", { class: "actions" }, submit),
  );
  return form;
}

async function renderPipeline(root, id) {
  const pipeline = await api("GET", `/pipelines/${encodeURIComponent(id)}`);
  const yaml = await api("GET", `/pipelines/${pipeline.id}/export`, { query: { format: "yaml" },
    headers: { Accept: "application/yaml" } });
  root.append(
    pageHeader(pipeline.name, h("a", { class: "button small", href: `#/runs?pipeline_id=${pipeline.id}` }, "Runs")),
    h("p", { class: "muted" }, pipeline.description || "", " ", h("span", { class: "mono" }, pipeline.slug),
      pipeline.is_active ? "" : " (inactive)"),
    triggerForm(pipeline),
    editor(pipeline, yaml),
    h("section", { "aria-labelledby": "recent-runs" }, h("h2", { id: "recent-runs" }, "Recent runs"),
      await recentRuns(pipeline.id)),
  );
}

function inputControl(name, decl) {
  const id = `input-${name}`;
  const type = decl.type || "string";
  const hint = [decl.description, decl.required ? "required" : ""].filter(Boolean).join(" — ");
  if (type === "boolean") {
    const box = h("input", { id, name, type: "checkbox", checked: decl.default === true });
    const wrap = field(name, box, hint);
    wrap.classList.add("checkbox");
    return { wrap, read: () => box.checked };
  }
  if (type === "choice") {
    const select = h("select", { id, name, required: Boolean(decl.required) },
      decl.required ? null : h("option", { value: "" }, "(default)"),
      (decl.options || []).map((opt) => h("option", { value: opt, selected: opt === decl.default }, opt)));
    return { wrap: field(name, select, hint), read: () => (select.value === "" ? undefined : select.value) };
  }
  if (type === "number") {
    const input = h("input", { id, name, type: "number", step: "any", inputmode: "decimal",
      required: Boolean(decl.required), value: decl.default ?? "" });
    return { wrap: field(name, input, hint), read: () => (input.value === "" ? undefined : Number(input.value)) };
  }
  const input = h("input", { id, name, type: "text", required: Boolean(decl.required), value: decl.default ?? "" });
  return { wrap: field(name, input, hint), read: () => (input.value === "" && !decl.required ? undefined : input.value) };
}

function triggerForm(pipeline) {
  const controls = Object.entries(pipeline.inputs || {}).map(([name, decl]) => [name, inputControl(name, decl)]);
  const problems = h("div", { "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary", disabled: !pipeline.is_active }, "Trigger run");
  return h("form", { class: "card", "aria-labelledby": "trigger-title", onsubmit: async (event) => {
    event.preventDefault();
    problems.replaceChildren();
    const inputs = {};
    for (const [name, control] of controls) {
      const value = control.read();
      if (value !== undefined) inputs[name] = value;
    }
    submit.disabled = true;
    try {
      const run = await api("POST", `/pipelines/${pipeline.id}/trigger`, { json: { inputs } });
      toast(`Run #${run.run_number} started`, "success");
      navigate(`#/runs/${run.id}`);
    } catch (err) {
      showError(problems, err);
    } finally {
      submit.disabled = !pipeline.is_active;
    }
  } },
  h("h2", { id: "trigger-title" }, "Trigger"),
  controls.length ? h("div", { class: "form-row" }, controls.map(([, c]) => c.wrap))
    : h("p", { class: "muted" }, "This pipeline declares no inputs."),
  problems,
  h("div", { class: "actions" }, submit));
}

function editor(pipeline, yaml) {
  const text = h("textarea", { id: "pipeline-yaml", class: "code", spellcheck: "false", value: yaml,
    readonly: pipeline.is_system ? true : null });
  const problems = h("div", { id: "edit-errors", "aria-live": "polite" });
  const save = h("button", { type: "submit", class: "primary", disabled: pipeline.is_system }, "Save");
  return h("form", { class: "card", "aria-labelledby": "edit-title", onsubmit: async (event) => {
    event.preventDefault();
    problems.replaceChildren();
    save.disabled = true;
    try {
      const saved = await api("PUT", `/pipelines/${pipeline.id}`, {
        body: text.value, headers: { "Content-Type": documentType(text.value) },
      });
      toast(`Saved ${saved.name}`, "success");
      navigate(`#/pipelines/${saved.id}`);
    } catch (err) {
      showError(problems, err);
      text.focus();
    } finally {
      save.disabled = pipeline.is_system;
    }
  } },
  h("h2", { id: "edit-title" }, "Definition"),
  pipeline.is_system ? h("p", { class: "muted" }, "A system pipeline: clone it to change it.") : null,
  field("Pipeline document (YAML)", text),
  problems,
  h("div", { class: "actions" }, save));
}

async function recentRuns(pipelineId) {
  const page = await api("GET", "/pipeline_runs", { query: { pipeline_id: pipelineId, limit: 10 } });
  return table([
    { label: "Run", cell: (r) => h("a", { href: `#/runs/${r.id}` }, `#${r.run_number}`) },
    { label: "Status", cell: (r) => statusBadge(r.status) },
    { label: "Trigger", cell: (r) => r.trigger_type },
    { label: "Started", cell: (r) => formatTime(r.started_at || r.created_at) },
  ], page.data, { empty: "No runs yet." });
}
