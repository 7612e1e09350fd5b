// Template marketplace (#/templates?q=&category=&difficulty=&sort=): public published pipeline
// templates of every account; install one as a pipeline of this account (then open it), rate it.
import { api, field, h, navigate, pageHeader, toast } from "../core.js";
import { actionButton, fill, ensureOpsCss, errorRegion, select, statusLine } from "./ops_common.js";

const CATEGORIES = ["review", "implement", "security", "deploy", "docs", "custom"];
const DIFFICULTIES = ["beginner", "intermediate", "advanced", "expert"];
const SORTS = [["rating", "Best rated"], ["installs", "Most installed"], ["newest", "Newest"]];
const PAGE_SIZE = 24;

export default async function render(root, params) {
  ensureOpsCss();
  const query = params.query || new URLSearchParams();
  const filters = {
    q: query.get("q") || "", category: query.get("category") || "", difficulty: query.get("difficulty") || "",
    sort: query.get("sort") || "rating",
  };
  const search = h("input", { type: "search", id: "tpl-q", name: "q", value: filters.q, placeholder: "name or description",
    autocomplete: "off" });
  const category = select({ id: "tpl-category", name: "category" }, [["", "any"], ...CATEGORIES], filters.category);
  const difficulty = select({ id: "tpl-difficulty", name: "difficulty" }, [["", "any"], ...DIFFICULTIES], filters.difficulty);
  const sort = select({ id: "tpl-sort", name: "sort" }, SORTS, filters.sort);
  const apply = () => {
    const next = new URLSearchParams();
    if (search.value.trim()) next.set("q", search.value.trim());
    if (category.value) next.set("category", category.value);
    if (difficulty.value) next.set("difficulty", difficulty.value);
    if (sort.value !== "rating") next.set("sort", sort.value);
    navigate(`#/templates${next.toString() ? `?${next}` : ""}`);
  };
  for (const control of [category, difficulty, sort]) control.addEventListener("change", apply);
  const summary = statusLine("", { id: "tpl-summary" });
  const grid = h("div", { class: "grid", id: "tpl-grid" });
  const pager = h("div", { class: "pager" });
  root.append(
    pageHeader("Template marketplace"),
    h("form", { class: "toolbar", role: "search", "aria-label": "Search templates",
      onsubmit: (e) => { e.preventDefault(); apply(); } },
    field("Search", search), field("Category", category), field("Difficulty", difficulty), field("Sort by", sort),
    h("button", { type: "submit", class: "primary" }, "Search")),
    summary, grid, pager);

  let offset = 0;
  let shown = 0;
  const load = async () => {
    const page = await api("GET", "/pipeline_templates/marketplace", {
      query: { q: filters.q, category: filters.category, difficulty: filters.difficulty, sort: filters.sort,
        limit: PAGE_SIZE, offset } });
    if (offset === 0) grid.replaceChildren();
    for (const template of page.data) grid.appendChild(card(template));
    shown += page.data.length;
    offset += page.data.length;
    summary.textContent = page.count === 0 ? "No templates match."
      : `${page.count} template${page.count === 1 ? "" : "s"}${filters.q ? ` matching “${filters.q}”` : ""}; showing ${shown}.`;
    fill(pager, shown < page.count
      ? actionButton("More templates", load, { small: false }) : null);
  };
  await load();
}

function stars(average, count) {
  if (!count) return h("span", { class: "muted" }, "not rated yet");
  const rounded = Math.round(average);
  return h("span", { class: "rating", role: "img", "aria-label": `rated ${average.toFixed(1)} out of 5 by ${count}` },
    "★".repeat(rounded) + "☆".repeat(5 - rounded), h("span", { class: "muted", "aria-hidden": "true" },
      ` ${average.toFixed(1)} (${count})`));
}

function card(t) {
  const rating = h("div", { class: "tpl-rating" }, stars(t.rating_average, t.rating_count));
  const installs = h("span", { class: "muted" }, `${t.installation_count} install${t.installation_count === 1 ? "" : "s"}`);
  const article = h("article", { class: "card tpl-card", "data-template-id": String(t.id), "aria-labelledby": `tpl-${t.id}-name` },
    h("h2", { id: `tpl-${t.id}-name` }, t.name),
    h("div", { class: "tpl-tags" }, h("span", { class: "tag" }, t.category), h("span", { class: "tag" }, t.difficulty),
      t.published_version ? h("span", { class: "tag mono" }, `v${t.published_version}`) : null,
      t.is_owner ? h("span", { class: "tag owner" }, "yours") : null),
    t.description ? h("p", { class: "description" }, t.description) : null,
    h("div", {}, rating, " ", installs),
    installForm(t, installs),
    rateForm(t, rating));
  return article;
}

function installForm(t, installs) {
  const version = h("input", { name: "version", value: t.published_version || "", placeholder: t.published_version || "1.0.0",
    autocomplete: "off", spellcheck: "false" });
  const name = h("input", { name: "name", autocomplete: "off", placeholder: "the document's name" });
  const slug = h("input", { name: "slug", autocomplete: "off", spellcheck: "false", placeholder: "the document's slug",
    pattern: "[a-z0-9]([a-z0-9-]*[a-z0-9])?" });
  const errors = errorRegion();
  const submit = h("button", { type: "submit", class: "primary" }, "Install");
  const form = h("form", { "aria-label": `Install ${t.name}`, onsubmit: async (event) => {
    event.preventDefault();
    errors.clear();
    submit.disabled = true;
    try {
      const body = {};
      if (version.value.trim()) body.version = version.value.trim();
      if (name.value.trim()) body.name = name.value.trim();
      if (slug.value.trim()) body.slug = slug.value.trim();
      const pipeline = await api("POST", `/pipeline_templates/${t.id}/install`, { json: body });
      installs.textContent = `${t.installation_count + 1} installs`;
      toast(`Installed “${t.name}” as pipeline ${pipeline.name}`, "success");
      navigate(`#/pipelines/${pipeline.id}`);
    } catch (err) {
      errors.show(err);
    } finally {
      submit.disabled = false;
    }
  } },
  field("Version", version, "default: the highest published version"), field("Pipeline name", name),
  field("Pipeline slug", slug), errors, submit);
  return h("details", { class: "tpl-install" }, h("summary", {}, "Install…"), form);
}

function rateForm(t, ratingBox) {
  const rating = select({ name: "rating", required: true },
    [["", "choose…"], ["5", "5 – excellent"], ["4", "4 – good"], ["3", "3 – fair"], ["2", "2 – poor"], ["1", "1 – bad"]],
    t.my_rating ?? "");
  const review = h("textarea", { name: "review", maxlength: "5000", rows: "3" });
  const errors = errorRegion();
  const done = statusLine();
  const submit = h("button", { type: "submit" }, t.my_rating ? "Update rating" : "Rate");
  const form = h("form", { "aria-label": `Rate ${t.name}`, onsubmit: async (event) => {
    event.preventDefault();
    errors.clear();
    done.textContent = "";
    if (!rating.value) {
      errors.show(new Error("Choose a rating from 1 to 5."));
      rating.focus();
      return;
    }
    submit.disabled = true;
    try {
      const updated = await api("POST", `/pipeline_templates/${t.id}/rate`,
        { json: { rating: Number(rating.value), review: review.value } });
      ratingBox.replaceChildren(stars(updated.rating_average, updated.rating_count));
      done.textContent = `Thanks: you rated it ${updated.my_rating ?? rating.value} of 5.`;
      submit.textContent = "Update rating";
    } catch (err) {
      errors.show(err);
    } finally {
      submit.disabled = false;
    }
  } },
  field("Your rating", rating), field("Review (optional)", review), errors, done, submit);
  return h("details", { class: "tpl-rate" }, h("summary", {}, t.my_rating ? `Your rating: ${t.my_rating} – change…` : "Rate…"), form);
}
