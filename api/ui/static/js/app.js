// The dashboard's shell: navigation, sign-in / sign-out and a hash router that imports each
// page module lazily (pages/<name>.js exporting `default async function render(root, params)`).
import {
  ApiError, cookie, errorList, forgetMe, h, me, navigate, runCleanups, setUnauthorizedHandler, toast,
} from "./core.js";

const NAV = [
  ["#/pipelines", "Pipelines"],
  ["#/runs", "Runs"],
  ["#/approvals", "Approvals"],
  ["#/schedules", "Schedules"],
  ["#/templates", "Templates"],
  ["#/containers", "Containers"],
  ["#/hosts", "Docker hosts"],
  ["#/swarm", "Swarm"],
];

// [pattern, page module, extra params]
const ROUTES = [
  [/^\/pipelines\/?$/, "pipelines"],
  [/^\/pipelines\/([^/]+)$/, "pipelines"],
  [/^\/runs\/?$/, "runs"],
  [/^\/runs\/([^/]+)$/, "runs"],
  [/^\/approvals\/?$/, "approvals"],
  [/^\/schedules\/?$/, "schedules"],
  [/^\/templates\/?$/, "templates"],
  [/^\/containers\/?$/, "containers"],
  [/^\/hosts\/?$/, "hosts"],
  [/^\/hosts\/([^/]+)$/, "hosts"],
  [/^\/swarm\/?$/, "swarm"],
  [/^\/swarm\/deployments\/([^/]+)$/, "swarm", { sub: "deployments" }],
];

const main = () => document.getElementById("main");
let signedIn = false;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/pipelines";
  const [path, search = ""] = raw.split("?");
  return { path, query: new URLSearchParams(search) };
}

function match(path) {
  for (const [pattern, page, extra] of ROUTES) {
    const found = pattern.exec(path);
    if (found) return { page, params: { id: found[1] ? decodeURIComponent(found[1]) : undefined, ...(extra || {}) } };
  }
  return null;
}

function renderNav(user) {
  const nav = document.getElementById("nav");
  const current = `#/${parseHash().path.split("/")[1] || ""}`;
  nav.replaceChildren(...[
    h("ul", { class: "nav-links" }, NAV.map(([href, label]) => h("li", {},
      h("a", { href, "aria-current": current === href ? "page" : null }, label)))),
    user ? h("div", { class: "nav-user" },
      h("span", { class: "muted", title: `role: ${user.role}` }, user.email),
      h("button", { type: "button", class: "small", onclick: signOut }, "Sign out")) : null,
  ].filter(Boolean));
}

async function signOut() {
  runCleanups();
  await fetch("/ui/session", { method: "DELETE", credentials: "same-origin" });
  forgetMe();
  signedIn = false;
  toast("Signed out", "info");
  showSignIn();
}

function showSignIn(message) {
  runCleanups();
  document.getElementById("nav").replaceChildren();
  const token = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true,
    spellcheck: "false" });
  const problems = h("div", { "aria-live": "polite" });
  if (message) problems.appendChild(errorList(message));
  const form = h("form", { class: "card signin", method: "post", action: "/ui/session", onsubmit: async (event) => {
    event.preventDefault();
    problems.replaceChildren();
    const response = await fetch("/ui/session", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ token: token.value }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      problems.replaceChildren(errorList(body.detail || `sign-in failed (${response.status})`));
      token.focus();
      return;
    }
    token.value = "";
    forgetMe();
    signedIn = false;
    route();
  } },
  h("h1", {}, "Sign in"),
  h("p", { class: "muted" }, "Paste an API token (dvo_...). It is kept in an HttpOnly cookie for this browser session."),
  h("div", { class: "field" }, h("label", { for: "token" }, "API token"), token),
  problems,
  h("button", { type: "submit", class: "primary" }, "Sign in"));
  main().replaceChildren(form);
  token.focus();
}

async function route() {
  runCleanups();
  const root = main();
  if (!cookie("devops_csrf")) {
    // never signed in here (the CSRF cookie comes and goes with the session): no request, so
    // opening the sign-in page does not count as a failed authentication of this address
    showSignIn();
    return;
  }
  let user;
  try {
    user = await me();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      showSignIn();
      return;
    }
    root.replaceChildren(errorList(err.message || String(err)));
    return;
  }
  signedIn = true;
  renderNav(user);
  const { path, query } = parseHash();
  const found = match(path);
  const page = h("div", { class: "page" });
  root.replaceChildren(page);
  if (!found) {
    page.appendChild(h("p", {}, "No such page. ", h("a", { href: "#/pipelines" }, "Go to pipelines")));
    return;
  }
  page.setAttribute("aria-busy", "true");
  try {
    const module = await import(`./pages/${found.page}.js`);
    await module.default(page, { ...found.params, query });
  } catch (err) {
    console.error(err);
    if (err instanceof ApiError && err.status === 401) return;
    page.appendChild(errorList(err instanceof ApiError ? err.detail : (err.message || String(err))));
  } finally {
    page.removeAttribute("aria-busy");
  }
  const heading = page.querySelector("h1");
  if (heading && document.activeElement === document.body) heading.focus({ preventScroll: true });
}

setUnauthorizedHandler(() => {
  if (signedIn) {
    signedIn = false;
    forgetMe();
    showSignIn("Your session has ended: sign in again.");
  }
});

window.addEventListener("hashchange", route);
document.querySelector(".skip-link")?.addEventListener("click", (event) => {
  event.preventDefault(); // the hash is the router's
  main().focus();
});
if (!location.hash) history.replaceState(null, "", "#/pipelines");
route();
export { navigate };
