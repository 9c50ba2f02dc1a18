// The console's shell: sign-in, the tenant switcher, the page router (#/rules, #/runs/<name>, ...).
import { api, finishSignIn, hasToken, setApiBase, setToken, signIn, takeTokenFromUrl, tenant, tenantsFromToken } from "./api.js";
import { clear, field, h, say } from "./dom.js";
import { connectionsPage } from "./connections.js";
import { dryRunPage } from "./dryrun.js";
import { ruleEditorPage, rulesPage } from "./rules.js";
import { runPage, runsPage } from "./runs.js";
import { usagePage } from "./usage.js";

const main = document.getElementById("main");
const tenantInput = document.getElementById("tenant");
let config = { auth: "token" };

function knownTenants() {
  return JSON.parse(sessionStorage.getItem("billflow.tenants") || "[]");
}

function remember(tenants) {
  const all = [...new Set([...knownTenants(), ...tenants])].filter((t) => /^[A-Za-z0-9_-]+$/.test(t));
  sessionStorage.setItem("billflow.tenants", JSON.stringify(all));
  const list = clear(document.getElementById("tenants"));
  for (const t of all) list.append(h("option", { value: t }));
  return all;
}

function switchTenant(value) {
  sessionStorage.setItem("billflow.tenant", value);
  tenantInput.value = value;
  remember([value]);
  route();
}

const PAGES = [
  [/^#\/rules\/new$/, () => ruleEditorPage(null)],
  [/^#\/rules\/([^/?]+)$/, (m) => ruleEditorPage(decodeURIComponent(m[1]))],
  [/^#\/rules$/, rulesPage],
  [/^#\/dry-run$/, dryRunPage],
  [/^#\/runs\/([^/?]+)(?:\?(.*))?$/, (m) => runPage(decodeURIComponent(m[1]), new URLSearchParams(m[2] || ""))],
  [/^#\/runs(?:\?(.*))?$/, (m) => runsPage(new URLSearchParams(m[1] || ""))],
  [/^#\/usage$/, usagePage],
  [/^#\/connections$/, connectionsPage],
];

let routing = 0;
let shown = null; // the page last shown (without its query)
async function route() {
  const hash = location.hash || "#/rules";
  const current = ++routing;
  for (const link of document.querySelectorAll("#nav a")) {
    const active = hash.startsWith(`#/${link.dataset.page}`);
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!hasToken()) return showSignIn();
  if (!tenant()) return showTenantPrompt();
  const found = PAGES.find(([re]) => re.test(hash));
  if (!found) { location.hash = "#/rules"; return; }
  clear(main).append(h("p", { class: "loading" }, "Loading…"));
  try {
    const page = await found[1](hash.match(found[0]));
    if (current !== routing) return; // the user went elsewhere meanwhile
    clear(main).append(page);
    const heading = main.querySelector("h1");
    document.title = `${heading ? heading.textContent : "billflow"} · ${tenant()} · billflow console`;
    // a new page: keyboard and screen-reader users start at its heading (a reload of the same page keeps focus)
    const pageKey = hash.split("?")[0];
    if (heading && shown !== pageKey && shown !== null) {
      heading.tabIndex = -1;
      heading.focus();
    }
    shown = pageKey;
  } catch (err) {
    if (current !== routing) return;
    showError(err);
  }
}

function showError(err) {
  if (err && err.status === 401) {
    setToken(null);
    return showSignIn("Your session has ended or the token is wrong: sign in again.");
  }
  const what = err && err.status === 403 ? `You may not see tenant "${tenant()}".` : (err && err.message) || String(err);
  clear(main).append(h("h1", {}, "Something went wrong"), h("p", { class: "error", role: "alert" }, what));
}

function showSignIn(reason) {
  clear(main);
  main.append(h("h1", {}, "Sign in"));
  if (reason) main.append(h("p", { class: "error", role: "alert" }, reason));
  if (config.auth === "cognito") {
    main.append(h("p", {}, "Sign in with your billflow account."),
      h("button", { type: "button", onclick: () => signIn(config) }, "Sign in"));
    return;
  }
  const input = h("input", { type: "password", autocomplete: "off", required: true });
  main.append(
    h("p", {}, "Open the console with the link `make run` printed (it carries the local token), or paste the token here."),
    h("form", { class: "stack", onsubmit: (e) => { e.preventDefault(); setToken(input.value.trim()); route(); } },
      field("Local API token", input), h("button", { type: "submit" }, "Use token")));
}

function showTenantPrompt() {
  clear(main).append(h("h1", {}, "Choose a tenant"), h("p", {}, "Type the tenant (CRM workspace) to manage in the box above."));
  tenantInput.focus();
}

document.getElementById("tenant-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (tenantInput.checkValidity()) switchTenant(tenantInput.value.trim());
});

async function start() {
  try { config = await api("GET", "/console/config.json"); } catch { config = { auth: "token" }; }
  setApiBase(config.api);
  if (config.auth === "cognito") {
    try { await finishSignIn(config); } catch (err) { say(err.message, "error"); }
  }
  const fromUrl = takeTokenFromUrl() || [];
  const tenants = remember([...fromUrl, ...tenantsFromToken()]);
  if (!tenant() && tenants.length) sessionStorage.setItem("billflow.tenant", tenants[0]);
  tenantInput.value = tenant();
  window.addEventListener("hashchange", route);
  await route();
}

start();
