// Connections (secrets: their keys and when they changed are shown, never their values) and tenant settings.
import { api, seg, tp } from "./api.js";
import { append, clear, field, h, say, select, table, when } from "./dom.js";

const TYPES = ["stripe", "quickbooks", "xero", "zoho_books", "hubspot", "twenty", "webhook", "generic"];
const OAUTH = new Set(["quickbooks", "xero", "zoho_books", "hubspot"]);
const KEYS = {
  stripe: ["api_key", "base_url"], twenty: ["api_key", "base_url"], webhook: ["url", "secret"], hubspot: ["private_app_token", "client_id", "client_secret"],
  quickbooks: ["client_id", "client_secret", "realm_id"], xero: ["client_id", "client_secret", "tenant_id"], zoho_books: ["client_id", "client_secret", "organization_id"],
  generic: ["base_url", "api_key", "api"],
};
// Settings that hold an object (a generic connection's calls, its record mapping): typed as JSON.
const OBJECT_SETTINGS = new Set(["api", "record_mapping"]);
const PUBLIC = new Set(["base_url", "url", "realm_id", "tenant_id", "organization_id", "client_id", "api", "record_mapping"]);

export async function connectionsPage() {
  const [conns, settings] = await Promise.all([api("GET", tp("/connections")), api("GET", tp("/settings"))]);
  const editor = h("div", { id: "connection-editor" });
  const rows = conns.connections.map((c) => {
    const out = h("span", { class: "test-result", "aria-live": "polite" });
    return h("tr", { "data-connection": c.name },
      h("td", {}, c.name), h("td", {}, c.type || ""), h("td", { class: "wrap" }, (c.keys || []).join(", ")), h("td", {}, when(c.updated_at)),
      h("td", { class: "row-actions" },
        h("button", { type: "button", onclick: () => testConnection(c.name, out) }, "Test", h("span", { class: "sr-only" }, ` ${c.name}`)),
        h("button", { type: "button", onclick: () => { clear(editor).append(connectionForm(c)); editor.querySelector("input,select")?.focus(); } }, "Edit", h("span", { class: "sr-only" }, ` ${c.name}`)),
        OAUTH.has(c.type) ? h("button", { type: "button", onclick: () => connect(c.name) }, "Connect", h("span", { class: "sr-only" }, ` ${c.name}`)) : null,
        deleteButton(c.name), out));
  });
  return h("section", {}, h("h1", {}, "Connections & settings"),
    h("div", { class: "title-row" }, h("h2", {}, "Connections"),
      h("button", { type: "button", onclick: () => { clear(editor).append(connectionForm(null)); editor.querySelector("input")?.focus(); } }, "New connection")),
    rows.length ? table(["Name", "Type", "Keys stored", "Changed", ""], rows, "Connections (secret values are never shown)") : h("p", {}, "No connections yet."),
    editor,
    h("h2", {}, "Settings"), settingsForm(settings));
}

async function testConnection(name, out) {
  clear(out).append("testing…");
  try {
    const report = await api("POST", tp(`/connections/${seg(name)}/test`));
    clear(out).append(h("span", { class: report.ok ? "ok" : "error" }, report.ok ? "✓ works" : "✗ failed"), " ", report.message || report.detail || "");
  } catch (err) { clear(out).append(h("span", { class: "error" }, `✗ ${err.message}`)); }
}

async function connect(name) {
  try {
    const { url } = await api("GET", tp(`/connections/${seg(name)}/authorize`));
    const target = new URL(url);
    if (target.protocol !== "https:" && target.hostname !== "127.0.0.1") throw new Error("the consent page must be https");
    window.open(target.toString(), "_blank", "noopener,noreferrer");
    say(`The provider's consent page opened in a new tab; come back once you have approved (${target.hostname}).`);
  } catch (err) { say(err.message, "error"); }
}

function deleteButton(name) {
  const button = h("button", { type: "button", class: "danger" }, "Delete", h("span", { class: "sr-only" }, ` ${name}`));
  button.addEventListener("click", async () => {
    if (!button.dataset.armed) { button.dataset.armed = "1"; button.textContent = `Really delete ${name}?`; return; }
    try { await api("DELETE", tp(`/connections/${seg(name)}`)); say(`Deleted ${name}.`); reload(); } catch (err) { say(err.message, "error"); }
  });
  return button;
}

function reload() {
  window.dispatchEvent(new HashChangeEvent("hashchange"));
}

function connectionForm(existing) {
  const name = h("input", { name: "name", required: true, pattern: "[A-Za-z0-9_\\-]+", value: existing?.name || "", readonly: Boolean(existing), autocomplete: "off" });
  const type = select(TYPES, existing?.type || "stripe", { name: "type" });
  const rows = h("div", { class: "rows" });
  const addRow = (key = "", hint = "") => {
    const k = h("input", { name: "key", value: key, autocomplete: "off", required: true });
    const secret = !PUBLIC.has(key);
    // secret values are typed, never shown back: the field starts empty, and an empty field keeps the stored value
    const v = h("input", { name: "value", type: secret ? "password" : "text", autocomplete: "new-password", placeholder: hint });
    rows.append(h("div", { class: "row kv" }, field("Key", k), field(secret ? "Value (secret)" : "Value", v),
      h("button", { type: "button", class: "icon danger", "aria-label": "Remove this key", onclick: (e) => e.target.closest(".row").remove() }, "✕")));
  };
  const hintFor = (key) => existing ? "unchanged unless typed" : OBJECT_SETTINGS.has(key) ? 'JSON, e.g. {"record": {"url": "…"}}' : "";
  const fill = () => { clear(rows); for (const key of existing?.keys?.length ? existing.keys : KEYS[type.value] || []) addRow(key, hintFor(key)); };
  type.addEventListener("change", () => { if (!existing) fill(); });
  fill();
  const submit = async (e) => {
    e.preventDefault();
    const settings = {};
    for (const row of rows.querySelectorAll(".kv")) {
      const [k, v] = row.querySelectorAll("input");
      const key = k.value.trim();
      if (!key || v.value === "") continue;
      if (OBJECT_SETTINGS.has(key)) {
        // sent as the object it is (a generic connection's calls); a typo says where, and nothing is saved
        try { settings[key] = JSON.parse(v.value); } catch (err) { say(`${key}: not valid JSON (${err.message})`, "error"); v.focus(); return; }
      } else settings[key] = v.value;
    }
    try {
      await api("PUT", tp(`/connections/${seg(name.value.trim())}`), { type: type.value, settings });
      say(`Saved connection ${name.value.trim()}.`);
      reload();
    } catch (err) { say(err.problems?.length ? `${err.message}: ${err.problems.join("; ")}` : err.message, "error"); }
  };
  return h("form", { class: "stack card", onsubmit: submit },
    h("h3", {}, existing ? `Edit ${existing.name}` : "New connection"),
    h("div", { class: "grid" }, field("Name", name), field("Type", type)), rows,
    h("div", { class: "buttons" }, h("button", { type: "button", onclick: () => addRow() }, "Add key"),
      h("button", { type: "submit", class: "primary" }, "Save connection")));
}

function settingsForm(settings) {
  const limits = h("div", { class: "rows", id: "daily-limits" });
  const addLimit = (type = "", n = "") => {
    const t = h("input", { name: "limit-type", value: type, autocomplete: "off", list: "limit-types" });
    const v = h("input", { name: "limit-value", type: "number", min: 0, value: n, required: true });
    limits.append(h("div", { class: "row kv", "data-limit": type }, field("Action type", t), field("Daily limit", v),
      h("button", { type: "button", class: "icon danger", "aria-label": `Remove the ${type || "new"} limit`, onclick: (e) => e.target.closest(".row").remove() }, "✕")));
  };
  for (const [type, n] of Object.entries(settings.daily_limits || {})) addLimit(type, n);
  const def = h("input", { name: "default_daily_limit", type: "number", min: 0, value: settings.default_daily_limit ?? "" });
  const tz = h("input", { name: "default_timezone", value: settings.default_timezone || "", placeholder: "Europe/Paris", autocomplete: "off" });
  const alert = settings.usage_alert || {};
  const alertOn = h("input", { type: "checkbox", name: "usage_alert_on", checked: Boolean(settings.usage_alert), id: "usage-alert-on" });
  const threshold = h("input", { name: "threshold_percent", type: "number", min: 1, max: 100, value: alert.threshold_percent ?? 80 });
  const alertTo = h("input", { name: "alert_recipients", value: (alert.recipients || []).join(", "), placeholder: "ops@example.com", autocomplete: "off" });
  const digest = settings.failure_digest || {};
  const digestOn = h("input", { type: "checkbox", name: "digest_on", checked: Boolean(settings.failure_digest), id: "digest-on" });
  const freq = select(["daily", "weekly"], digest.frequency || "daily", { name: "frequency" });
  const time = h("input", { name: "time", type: "time", value: digest.time || "08:00" });
  const digestTz = h("input", { name: "timezone", value: digest.timezone || "UTC", autocomplete: "off" });
  const digestTo = h("input", { name: "digest_recipients", value: (digest.recipients || []).join(", "), autocomplete: "off" });
  const list = (text) => text.split(",").map((x) => x.trim()).filter(Boolean);
  const submit = async (e) => {
    e.preventDefault();
    const daily = {};
    for (const row of limits.querySelectorAll(".kv")) {
      const [t, v] = row.querySelectorAll("input");
      if (t.value.trim()) daily[t.value.trim()] = Number(v.value);
    }
    const body = { daily_limits: daily, default_daily_limit: def.value === "" ? null : Number(def.value), default_timezone: tz.value.trim() || null,
      usage_alert: alertOn.checked ? { threshold_percent: Number(threshold.value), recipients: list(alertTo.value) } : null,
      failure_digest: digestOn.checked ? { frequency: freq.value, time: time.value, timezone: digestTz.value.trim(), recipients: list(digestTo.value) } : null };
    try {
      await api("PUT", tp("/settings"), body);
      say("Settings saved.");
      reload();
    } catch (err) { say(err.problems?.length ? `${err.message}: ${err.problems.join("; ")}` : err.message, "error"); }
  };
  const form = h("form", { class: "stack", id: "settings-form", onsubmit: submit });
  append(form, [
    h("fieldset", {}, h("legend", {}, "Daily limits (sends per action type and day)"), limits,
      h("datalist", { id: "limit-types" }, ["invoice", "estimate", "sales_receipt", "webhook", "email_alert", "notification", "field_update"].map((t) => h("option", { value: t }))),
      h("button", { type: "button", onclick: () => { addLimit(); limits.lastChild.querySelector("input").focus(); } }, "Add a limit"),
      field("Default daily limit", def, "for action types without their own")),
    h("fieldset", {}, h("legend", {}, "Usage alert"), h("div", { class: "field inline" }, alertOn, h("label", { for: alertOn.id }, "Alert when usage passes a share of a limit")),
      h("div", { class: "grid" }, field("Threshold (%)", threshold), field("Recipients", alertTo, "comma-separated addresses"))),
    h("fieldset", {}, h("legend", {}, "Failure digest"), h("div", { class: "field inline" }, digestOn, h("label", { for: digestOn.id }, "Send a digest of failed and limited runs")),
      h("div", { class: "grid" }, field("Frequency", freq), field("Time", time), field("Time zone", digestTz), field("Recipients", digestTo))),
    field("Rules' default time zone", tz),
    settings.updated_at ? h("p", { class: "muted" }, `Last changed ${when(settings.updated_at)}`) : null,
    h("button", { type: "submit", class: "primary" }, "Save settings"),
  ]);
  return form;
}
