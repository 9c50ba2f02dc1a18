// The execution log (filters by rule, record, status, dates) and one run's page: its path through the state
// machine, each action's request summary and external id, Replay for failed or limited runs.
import { ap, api, seg, tp } from "./api.js";
import { badge, clear, field, h, say, select, table, when } from "./dom.js";
import { drawStateMachine } from "./statemachine.js";

const STATUSES = ["", "succeeded", "sent", "failed", "limited", "skipped", "not_matched", "scheduled"];

export function recordOf(item) {
  const parts = String(item.record_key || "").split("#");
  return parts.length >= 4 ? `${parts[1]}:${parts[2]}:${parts.slice(3).join("#")}` : "";
}

function runsOf(items) {
  const runs = new Map();
  for (const item of items) {
    if (!runs.has(item.execution)) runs.set(item.execution, { name: item.execution, items: [] });
    runs.get(item.execution).items.push(item);
  }
  for (const run of runs.values()) {
    run.items.sort((a, b) => String(a.at).localeCompare(String(b.at)));
    const final = run.items.find((i) => i.step === "run") || run.items[run.items.length - 1];
    Object.assign(run, { status: final.status, reason: final.reason || "", at: run.items[0].at, last: final.at, rule: final.rule_id, record: recordOf(final) });
  }
  return [...runs.values()].sort((a, b) => String(b.last).localeCompare(String(a.last)));
}

export async function runsPage(params) {
  const { rules } = await api("GET", tp("/rules"));
  const q = { rule: params.get("rule") || "", record: params.get("record") || "", status: params.get("status") || "", limit: "200" };
  const query = new URLSearchParams(Object.entries(q).filter(([, v]) => v));
  const { executions } = await api("GET", tp(`/executions?${query}`));
  const from = params.get("from"), to = params.get("to");
  const inRange = (item) => (!from || String(item.at) >= from) && (!to || String(item.at).slice(0, 10) <= to);
  const runs = runsOf(executions.filter(inRange));
  const rule = select([["", "every rule"], ...rules.map((r) => [r.id, r.id])], q.rule, { name: "rule" });
  const status = select(STATUSES.map((x) => [x, x || "any status"]), q.status, { name: "status" });
  const record = h("input", { name: "record", value: q.record, placeholder: "twenty:opportunity:<id>", autocomplete: "off" });
  const fromIn = h("input", { type: "date", name: "from", value: from || "" });
  const toIn = h("input", { type: "date", name: "to", value: to || "" });
  const filter = (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const [k, el] of [["rule", rule], ["record", record], ["status", status], ["from", fromIn], ["to", toIn]]) if (el.value) next.set(k, el.value.trim());
    location.hash = `#/runs${next.toString() ? `?${next}` : ""}`;
  };
  const rows = runs.map((run) => h("tr", { "data-execution": run.name },
    h("td", {}, when(run.last)), h("td", {}, run.rule || ""), h("td", { class: "wrap" }, run.record),
    h("td", {}, badge(run.status)), h("td", { class: "wrap" }, run.reason),
    h("td", {}, h("a", { href: `#/runs/${seg(run.name)}?rule=${seg(run.rule || "")}` }, "Open", h("span", { class: "sr-only" }, ` run ${run.name}`)))));
  return h("section", {}, h("div", { class: "title-row" }, h("h1", {}, "Execution log"),
      h("button", { type: "button", onclick: () => window.dispatchEvent(new HashChangeEvent("hashchange")) }, "Refresh")),
    h("form", { class: "filters", onsubmit: filter },
      field("Rule", rule), field("Record", record), field("Status", status), field("From", fromIn), field("To", toIn),
      h("button", { type: "submit" }, "Filter")),
    runs.length ? table(["When", "Rule", "Record", "Status", "Reason", ""], rows, `${runs.length} run(s), newest first`) : h("p", {}, "No runs match."));
}

const LINKS = [
  [/^(in|cus|ch|pi)_/, (id) => `https://dashboard.stripe.com/${id.startsWith("in_") ? "invoices" : "customers"}/${encodeURIComponent(id)}`, "Stripe"],
];
const BY_TYPE = {
  quickbooks: (id) => `https://app.qbo.intuit.com/app/invoice?txnId=${encodeURIComponent(id)}`,
  xero: (id) => `https://go.xero.com/AccountsReceivable/View.aspx?InvoiceID=${encodeURIComponent(id)}`,
  zoho_books: (id) => `https://books.zoho.com/app#/invoices/${encodeURIComponent(id)}`,
  stripe: (id) => `https://dashboard.stripe.com/invoices/${encodeURIComponent(id)}`,
};

export function externalLink(item) {
  const id = item.external_id;
  if (!id) return null;
  const system = String(item.target || item.connection_type || item.action_type || "").split(".")[0];
  const byType = BY_TYPE[system];
  const byId = LINKS.find(([re]) => re.test(id));
  const url = byType ? byType(id) : byId ? byId[1](id) : null;
  return url ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, id) : h("code", {}, id);
}

export async function runPage(name, params) {
  const rule = params.get("rule");
  const query = new URLSearchParams({ limit: "200", ...(rule ? { rule } : {}) });
  const { executions } = await api("GET", tp(`/executions?${query}`));
  const run = runsOf(executions.filter((i) => i.execution === name))[0];
  const page = h("section", { class: "run" }, h("h1", {}, "Run"), h("p", { class: "mono wrap" }, name));
  if (!run) { page.append(h("p", {}, "This run has no entry in the execution log (yet).")); }
  else {
    page.append(h("dl", { class: "facts" },
      h("dt", {}, "Status"), h("dd", {}, badge(run.status)),
      h("dt", {}, "Rule"), h("dd", {}, h("a", { href: `#/rules/${seg(run.rule || "")}` }, run.rule || "")),
      h("dt", {}, "Record"), h("dd", { class: "wrap" }, run.record),
      h("dt", {}, "Started"), h("dd", {}, when(run.at)),
      run.reason ? [h("dt", {}, "Reason"), h("dd", { class: "wrap" }, run.reason)] : null));
    if (["failed", "limited"].includes(run.status)) {
      const out = h("p", { "aria-live": "polite" });
      page.append(h("div", { class: "buttons" }, h("button", { type: "button", class: "primary", id: "replay", onclick: async (e) => {
        e.target.disabled = true;
        try {
          const answer = await api("POST", tp(`/executions/${seg(name)}/replay`));
          clear(out).append("Replayed as ", h("a", { href: `#/runs/${seg(answer.execution)}?rule=${seg(run.rule || "")}` }, answer.execution));
          say(`Replay started: ${answer.execution}`);
        } catch (err) { say(err.message, "error"); e.target.disabled = false; }
      } }, "Replay"), out));
    }
    const steps = run.items.filter((i) => i.step !== "run");
    page.append(h("h2", {}, "Actions"), steps.length ? table(["Step", "Type", "Status", "External id", "Request", "When"], steps.map((i) => h("tr", {},
      h("td", {}, i.step), h("td", {}, i.action_type || ""), h("td", {}, badge(i.status)), h("td", {}, externalLink(i)),
      h("td", { class: "wrap" }, summary(i)), h("td", {}, when(i.at)))), "What each action did") : h("p", {}, "No action was logged."));
  }
  page.append(h("h2", {}, "Path through the state machine"));
  try {
    const [{ definition }, trail] = await Promise.all([api("GET", ap("/statemachine")), api("GET", tp(`/executions/${seg(name)}/path`))]);
    page.append(h("p", {}, `Execution status: ${trail.status}`), drawStateMachine(typeof definition === "string" ? JSON.parse(definition) : definition, trail.states),
      h("details", {}, h("summary", {}, "States in order"), table(["State", "Status", "Entered", "Exited", "Retries"], trail.states.map((st) => h("tr", {},
        h("td", {}, st.name), h("td", {}, badge(st.status)), h("td", {}, when(st.entered)), h("td", {}, when(st.exited)), h("td", {}, String(st.retries ?? 0)))))));
  } catch (err) {
    page.append(h("p", { class: "error" }, `The path cannot be shown: ${err.message}`));
  }
  return page;
}

function summary(item) {
  // the log keeps what each action did: its type, outcome, reason and the id the target gave
  const parts = [`${item.action_type || "action"} ${item.status}`];
  if (item.external_id) parts.push(`→ ${item.external_id}`);
  if (item.reason) parts.push(`: ${item.reason}`);
  return parts.join(" ");
}
