// Dry run: a pasted or picked sample event through the stored rules (or one rule); nothing is sent.
import { api, tp } from "./api.js";
import { append, badge, clear, field, h, json, say, select, table } from "./dom.js";
import { SAMPLES } from "./samples.js";

export async function dryRunPage() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const { rules } = await api("GET", tp("/rules"));
  const sample = select([["", "— pick a sample event —"], ...SAMPLES.map((x, i) => [String(i), x.name])], "", { id: "dry-sample" });
  const event = h("textarea", { id: "dry-event", class: "code", rows: 14, spellcheck: "false" });
  event.value = JSON.stringify(SAMPLES[0].event, null, 2);
  const source = h("input", { id: "dry-source", value: SAMPLES[0].source, autocomplete: "off" });
  const rule = select([["", "every rule of the object"], ...rules.map((r) => [r.id, `${r.id} (${r.source} · ${r.object})`])], params.get("rule") || "", { id: "dry-rule" });
  sample.addEventListener("change", () => {
    const picked = SAMPLES[Number(sample.value)];
    if (!picked) return;
    event.value = JSON.stringify(picked.event, null, 2);
    source.value = picked.source;
  });
  const out = h("div", { id: "dry-result", "aria-live": "polite" });
  const run = async (e) => {
    e.preventDefault();
    let body;
    try { body = JSON.parse(event.value); } catch (err) { say(`The event is not JSON: ${err.message}`, "error"); event.focus(); return; }
    try {
      const report = await api("POST", tp("/dry-run"), { event: body, source: source.value || null, rule_id: rule.value || null });
      clear(out).append(renderReport(report));
      out.querySelector("h2")?.focus();
    } catch (err) {
      clear(out).append(h("p", { class: "error", role: "alert" }, err.message), err.problems.length ? h("ul", {}, err.problems.map((p) => h("li", {}, p))) : null);
    }
  };
  return h("section", {}, h("h1", {}, "Dry run"),
    h("p", {}, "What the rules would do with an event: the trigger's verdict, each criterion and why, every request each action would send. Nothing is sent, counted or stored."),
    h("form", { class: "stack", onsubmit: run },
      h("div", { class: "grid" }, field("Sample", sample), field("Source (CRM)", source), field("Rule", rule)),
      field("Event (the CRM's webhook body)", event),
      h("button", { type: "submit", class: "primary" }, "Dry run")),
    out);
}

function renderReport(report) {
  const box = h("div", { class: "report" });
  for (const ev of report.events) {
    append(box, [h("h2", { tabindex: "-1" }, `${ev.source} · ${ev.object} ${ev.action}: record ${ev.record_id}`),
      h("p", { class: "muted" }, `Changes from ${ev.changes_from}. Lookup: ${ev.lookup}.`),
      ev.changes.length ? table(["Field", "Before", "After"], ev.changes.map((c) => h("tr", {}, h("td", {}, c.field), h("td", {}, fmt(c.before)), h("td", {}, fmt(c.after)))), "Changed fields") : null]);
    if (!ev.rules.length) box.append(h("p", {}, "No rule of this object."));
    for (const r of ev.rules) {
      const verdict = r.runs ? "runs" : r.matched ? "matched (inactive)" : "does not run";
      const card = h("article", { class: `verdict ${r.runs ? "yes" : "no"}` },
        h("h3", {}, badge(r.runs ? "runs" : "skipped"), ` ${r.rule_id}: ${verdict}`),
        h("p", {}, r.reason), r.transition ? h("p", { class: "muted" }, `transition ${r.transition} → execution ${r.execution_name}`) : null,
        r.notes.map((n) => h("p", { class: "muted" }, n)));
      for (const block of r.blocks) {
        card.append(table(["#", "Field", "Comparator", "Value", "Actual", "Holds", "Why"], block.criteria.map((c) => h("tr", {},
          h("td", {}, String(c.number)), h("td", {}, c.field), h("td", {}, c.comparator), h("td", {}, fmt(c.value)), h("td", {}, fmt(c.actual)),
          h("td", {}, c.pending ? "after lookup" : c.matched ? "yes" : "no"), h("td", {}, c.reason))),
        `Block ${block.index + 1} (${block.pattern}): ${block.pending ? "decided after lookup" : block.matched ? "holds" : "does not hold"}`));
      }
      for (const a of r.actions) {
        card.append(h("div", { class: "action-report" },
          h("h4", {}, `Action ${a.index + 1}: ${a.type}${a.connection ? ` via ${a.connection}` : ""} (${a.when})`),
          a.error ? h("p", { class: "error" }, a.error) : null,
          h("ol", { class: "requests" }, (a.requests || []).map((q) => h("li", {},
            h("code", {}, `${q.method} ${q.url || q.path}`), q.when ? h("span", { class: "muted" }, ` (only when ${q.when})`) : null,
            q.idempotency_key ? h("div", { class: "muted" }, `Idempotency-Key: ${q.idempotency_key}`) : null,
            h("details", {}, h("summary", {}, "body"), json(q.params ?? q.body ?? q.json ?? q.form ?? null))))),
          a.request ? h("details", {}, h("summary", {}, "rendered document"), json(a.request)) : null));
      }
      box.append(card);
    }
  }
  return box;
}

function fmt(value) {
  if (value === null || value === undefined) return "—";
  return typeof value === "string" ? value : JSON.stringify(value);
}
