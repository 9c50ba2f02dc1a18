// Rules: the list per source and object in run order (active toggle, clone, delete, reorder), and the editor
// (form view for the common cases, YAML with problems at their line, a diff before saving).
import { ApiError, api, seg, tp } from "./api.js";
import { append, badge, clear, field, h, say, select, table } from "./dom.js";
import { dumpYaml, lineOf, parseYaml, YamlError } from "./yaml.js";

// ---------------------------------------------------------------------------------------------- list
export async function rulesPage() {
  const { rules } = await api("GET", tp("/rules"));
  const page = h("section", {}, h("div", { class: "title-row" }, h("h1", {}, "Rules"),
    h("a", { class: "button", href: "#/rules/new" }, "New rule")));
  if (!rules.length) page.append(h("p", {}, "No rules yet: create one, or apply a folder with `billflow rules apply`."));
  const groups = new Map();
  for (const rule of rules) {
    const key = `${rule.source} · ${rule.object}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(rule);
  }
  for (const [key, list] of [...groups.entries()].sort()) {
    list.sort((a, b) => a.order - b.order || a.id.localeCompare(b.id));
    page.append(h("h2", {}, key), table(["Order", "Rule", "Active", ""], list.map((rule, i) => ruleRow(rule, i, list)), `Rules of ${key}, in the order they run`));
  }
  return page;
}

function ruleRow(rule, index, list) {
  const reorder = async (delta) => {
    const ids = list.map((r) => r.id);
    const [moved] = ids.splice(index, 1);
    ids.splice(index + delta, 0, moved);
    await act(() => api("POST", tp("/rules/reorder"), { source: rule.source, object: rule.object, rule_ids: ids }), `Moved ${rule.id}`);
  };
  const toggle = h("input", { type: "checkbox", checked: rule.active, id: `active-${rule.id}`,
    onchange: (e) => act(() => api("POST", tp(`/rules/${seg(rule.id)}/${e.target.checked ? "activate" : "deactivate"}`)),
      `${rule.id} is now ${e.target.checked ? "active" : "inactive"}`) });
  const del = h("button", { type: "button", class: "danger" }, "Delete");
  del.addEventListener("click", () => {
    if (del.dataset.armed) return act(() => api("DELETE", tp(`/rules/${seg(rule.id)}`)), `Deleted ${rule.id}`);
    del.dataset.armed = "1";
    del.textContent = `Really delete ${rule.id}?`;
  });
  const taken = new Set(list.map((r) => r.id));
  let copyId = `${rule.id}-copy`.slice(0, 60);
  for (let n = 2; taken.has(copyId); n++) copyId = `${rule.id}-copy-${n}`;
  return h("tr", {},
    h("td", { class: "order" }, String(rule.order),
      h("button", { type: "button", class: "icon", disabled: index === 0, "aria-label": `Move ${rule.id} up`, onclick: () => reorder(-1) }, "▲"),
      h("button", { type: "button", class: "icon", disabled: index === list.length - 1, "aria-label": `Move ${rule.id} down`, onclick: () => reorder(1) }, "▼")),
    h("td", {}, h("a", { href: `#/rules/${seg(rule.id)}` }, rule.id), h("div", { class: "muted" }, rule.name || "")),
    h("td", {}, h("label", { class: "switch", for: toggle.id }, toggle, h("span", {}, rule.active ? "active" : "inactive"))),
    h("td", { class: "row-actions" },
      h("button", { type: "button", onclick: () => act(() => api("POST", tp(`/rules/${seg(rule.id)}/clone`), { new_id: copyId }), `Cloned ${rule.id} as ${copyId} (inactive)`) }, "Clone"),
      del));
}

async function act(call, done) {
  try {
    await call();
    say(done);
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  } catch (err) {
    say(err.problems?.length ? `${err.message}: ${err.problems.join("; ")}` : err.message, "error");
  }
}

// ---------------------------------------------------------------------------------------------- editor
const TEXT = ["equals", "not_equals", "contains", "not_contains", "starts_with", "ends_with", "in", "not_in", "is_empty", "is_not_empty"];
const NUMBER = ["equals", "not_equals", "greater_than", "greater_or_equal", "less_than", "less_or_equal", "between", "in", "not_in", "is_empty", "is_not_empty"];
const DATE = ["before", "after", "on", "on_or_before", "on_or_after", "today", "yesterday", "tomorrow", "is_empty", "is_not_empty"];
const CHANGE = ["changed", "changed_to", "changed_from"];
export const COMPARATORS = { text: [...CHANGE, ...TEXT], number: [...CHANGE, ...NUMBER], date: [...CHANGE, ...DATE], boolean: [...CHANGE, "equals", "not_equals", "is_empty", "is_not_empty"] };
const NO_VALUE = new Set(["changed", "is_empty", "is_not_empty", "today", "yesterday", "tomorrow"]);
const ACTION_TYPES = ["stripe.invoice", "quickbooks.invoice", "xero.invoice", "zoho_books.invoice", "stripe.estimate", "webhook", "field_update", "email_alert", "notification"];

export function kindOf(fieldName, value) {
  const f = String(fieldName || "").toLowerCase();
  if (/(amount|micros|price|quantity|total|count|probability|number)/.test(f) || typeof value === "number") return "number";
  if (/(date|_at$|at$|time|day)/.test(f)) return "date";
  if (typeof value === "boolean") return "boolean";
  return "text";
}

const BLANK = {
  id: "", name: "", source: "twenty", object: "opportunity", active: true, order: 10,
  trigger: { type: "event", on: "edited", when: "every_edit" },
  criteria: [{ field: "stage", comparator: "changed_to", value: "CUSTOMER" }],
  actions: [{ type: "stripe.invoice", connection: "stripe-main" }],
};

const DEFAULTS = { timezone: "UTC", blocks_match: "first", once_per: "record" };

function dropEmpty(value) {
  if (Array.isArray(value)) return value.map(dropEmpty);
  if (value && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) {
      if (v === null || (Array.isArray(v) && v.length === 0)) continue;
      out[k] = dropEmpty(v);
    }
    return out;
  }
  return value;
}

function compactAction(action) {
  const a = dropEmpty(action);
  if (a.system) { a.type = `${a.system}.${a.type}`; delete a.system; }
  return a;
}

// What the API answers is the normalised rule (blocks, nulls, defaults, version); the editor shows it as an
// admin writes it: one block's criteria and actions at the top, "stripe.invoice", no empty or default fields.
export function cleanDocument(rule) {
  const doc = dropEmpty(JSON.parse(JSON.stringify(rule)));
  for (const key of ["tenant", "version", "updated_at", "created_at"]) delete doc[key];
  for (const [key, value] of Object.entries(DEFAULTS)) if (doc[key] === value) delete doc[key];
  if (doc.trigger && doc.trigger.type === "event" && doc.trigger.when === "every_edit") delete doc.trigger.when;
  const blocks = (doc.blocks || []).map((b) => ({ ...b, actions: (b.actions || []).map(compactAction), ...(b.time_based ? { time_based: b.time_based.map((t) => ({ ...t, actions: (t.actions || []).map(compactAction) })) } : {}) }));
  if (blocks.length === 1) {
    delete doc.blocks;
    const [only] = blocks;
    const { criteria, pattern, actions, ...rest } = only;
    Object.assign(doc, criteria ? { criteria } : {}, pattern ? { pattern } : {}, actions ? { actions } : {}, rest);
  } else if (blocks.length) doc.blocks = blocks;
  if (doc.on_failure) doc.on_failure = doc.on_failure.map(compactAction);
  return doc;
}

export async function ruleEditorPage(ruleId) {
  let stored = null;
  if (ruleId) stored = cleanDocument((await api("GET", tp(`/rules/${seg(ruleId)}`))).rule);
  const storedYaml = stored ? dumpYaml(stored) : "";
  const page = h("section", { class: "editor" }, h("h1", {}, ruleId ? `Rule ${ruleId}` : "New rule"));
  const textarea = h("textarea", { id: "rule-yaml", class: "code", spellcheck: "false", rows: 24, "aria-describedby": "yaml-problems",
    autocapitalize: "off", autocomplete: "off" });
  textarea.value = stored ? storedYaml : dumpYaml(BLANK);
  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  const problems = h("ul", { id: "yaml-problems", class: "problems", "aria-live": "polite" });
  const diffBox = h("div", { class: "diff-box" });
  const formBox = h("div", { class: "form-box" });

  const marks = new Map(); // line -> message
  const drawGutter = () => {
    clear(gutter);
    const count = textarea.value.split("\n").length;
    for (let n = 1; n <= count; n++) {
      gutter.append(h("div", { class: marks.has(n) ? "bad" : "", title: marks.get(n) || null }, String(n)));
    }
    gutter.scrollTop = textarea.scrollTop;
  };
  textarea.addEventListener("input", () => { marks.clear(); clear(diffBox); drawGutter(); });
  textarea.addEventListener("scroll", () => { gutter.scrollTop = textarea.scrollTop; });

  const showProblems = (list) => {
    marks.clear();
    clear(problems);
    for (const { line, message } of list) {
      marks.set(line, message);
      const jump = h("button", { type: "button", class: "link", onclick: () => goToLine(textarea, line) }, `line ${line}`);
      problems.append(h("li", { class: "problem", "data-line": line }, jump, ": ", message));
    }
    drawGutter();
  };

  // Parse, then validate with the API's validate route (what `billflow rules validate` calls).
  const check = async () => {
    let parsed;
    try { parsed = parseYaml(textarea.value); } catch (err) {
      if (err instanceof YamlError) { showProblems([{ line: err.line, message: err.message.replace(/^line \d+: /, "") }]); return null; }
      throw err;
    }
    const doc = parsed.value;
    if (!doc || typeof doc !== "object" || Array.isArray(doc)) { showProblems([{ line: 1, message: "a rule is a mapping (id:, name:, source: ...)" }]); return null; }
    const answer = await api("POST", tp("/rules/validate"), { rules: [doc] });
    const found = answer.problems.map((p) => locate(p, parsed.lines, doc));
    showProblems(found);
    if (!found.length) say("The rule is valid.");
    return found.length ? null : doc;
  };

  const save = async () => {
    const doc = await check();
    if (!doc) return;
    if (stored && doc.id !== stored.id) { showProblems([{ line: lineOf(parseYaml(textarea.value).lines, "id"), message: `the id is ${stored.id}: clone the rule to give it another id` }]); return; }
    clear(diffBox);
    const lines = diffLines(storedYaml, dumpYaml(doc));
    const confirm = h("button", { type: "button", class: "primary", onclick: async () => {
      try {
        if (stored) await api("PUT", tp(`/rules/${seg(stored.id)}`), doc);
        else await api("POST", tp("/rules"), doc);
        say(`Saved ${doc.id}.`);
        location.hash = `#/rules/${seg(doc.id)}`;
        window.dispatchEvent(new HashChangeEvent("hashchange"));
      } catch (err) {
        if (err instanceof ApiError && err.problems.length) showProblems(err.problems.map((p) => locate(p, parseYaml(textarea.value).lines, doc)));
        say(err.message, "error");
      }
    } }, stored ? "Save these changes" : "Create rule");
    const changed = lines.some((l) => l.op !== " ");
    diffBox.append(h("h2", {}, stored ? "Changes against the stored rule" : "New rule"),
      changed ? h("pre", { class: "diff", "aria-label": "Differences" }, lines.map((l) => h("span", { class: l.op === "+" ? "add" : l.op === "-" ? "del" : "" }, `${l.op} ${l.text}\n`)))
        : h("p", {}, "No changes."),
      changed ? confirm : null);
    confirm.focus();
  };

  const toForm = () => {
    clear(formBox);
    let doc;
    try { doc = parseYaml(textarea.value).value || {}; } catch { doc = { ...BLANK }; }
    if (doc.blocks || doc.trigger?.type === "date") {
      formBox.append(h("p", { class: "muted" }, "This rule uses blocks or a date trigger: the form covers the common cases; edit it in the YAML view."));
      return;
    }
    formBox.append(ruleForm(doc, (next) => { textarea.value = dumpYaml(next); marks.clear(); drawGutter(); clear(diffBox); }));
  };

  const tabs = h("div", { class: "tabs", role: "group", "aria-label": "Editor view" },
    h("button", { type: "button", "aria-pressed": "true", id: "tab-form", onclick: (e) => showTab(e.target, "form") }, "Form"),
    h("button", { type: "button", "aria-pressed": "false", id: "tab-yaml", onclick: (e) => showTab(e.target, "yaml") }, "YAML"));
  const yamlBox = h("div", { class: "yaml-box", hidden: true },
    h("label", { for: "rule-yaml" }, "Rule YAML"), h("div", { class: "code-wrap" }, gutter, textarea));
  const showTab = (button, which) => {
    for (const b of tabs.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b === button));
    yamlBox.hidden = which !== "yaml";
    formBox.hidden = which !== "form";
    if (which === "form") toForm();
  };

  append(page, [tabs, formBox, yamlBox, problems,
    h("div", { class: "buttons" },
      h("button", { type: "button", onclick: () => check().catch((e) => say(e.message, "error")) }, "Validate"),
      h("button", { type: "button", class: "primary", onclick: () => save().catch((e) => say(e.message, "error")) }, "Review and save"),
      stored ? h("a", { class: "button", href: `#/dry-run?rule=${seg(stored.id)}` }, "Dry run") : null,
      stored ? h("a", { class: "button", href: `#/runs?rule=${seg(stored.id)}` }, "Runs") : null),
    diffBox]);
  toForm();
  drawGutter();
  return page;
}

// "rule won: blocks.0.actions.0.typo: Extra inputs..." -> the line of actions.0.typo
export function locate(problem, lines, doc) {
  const m = String(problem).match(/^rule [^:]*: ([^:]+): (.*)$/s) || String(problem).match(/^([\w.-]+): (.*)$/s);
  if (!m) return { line: 1, message: String(problem) };
  let path = m[1].trim();
  if (path.startsWith("blocks.") && !doc.blocks) path = path.replace(/^blocks\.\d+\./, "");
  return { line: lineOf(lines, path), message: `${path}: ${m[2]}` };
}

function goToLine(textarea, line) {
  const before = textarea.value.split("\n").slice(0, line - 1).join("\n");
  const start = line > 1 ? before.length + 1 : 0;
  const end = textarea.value.indexOf("\n", start);
  const yamlTab = document.getElementById("tab-yaml");
  if (yamlTab && yamlTab.getAttribute("aria-pressed") !== "true") yamlTab.click();
  textarea.focus();
  textarea.setSelectionRange(start, end < 0 ? textarea.value.length : end);
}

// Longest common subsequence over lines: enough for a rule of a few dozen lines.
export function diffLines(before, after) {
  const a = before ? before.replace(/\n$/, "").split("\n") : [];
  const b = after.replace(/\n$/, "").split("\n");
  const lcs = Array.from({ length: a.length + 1 }, () => new Array(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--) for (let j = b.length - 1; j >= 0; j--) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) { out.push({ op: " ", text: a[i] }); i++; j++; }
    else if (j < b.length && (i >= a.length || lcs[i][j + 1] >= lcs[i + 1][j])) out.push({ op: "+", text: b[j++] });
    else out.push({ op: "-", text: a[i++] });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------- form view
function ruleForm(doc, changed) {
  const d = { ...BLANK, ...doc, trigger: { ...BLANK.trigger, ...(doc.trigger || {}) } };
  d.criteria = Array.isArray(doc.criteria) ? doc.criteria.map((c) => ({ ...c })) : [];
  d.actions = Array.isArray(doc.actions) ? doc.actions.map((a) => ({ ...a })) : [];
  const form = h("form", { class: "rule-form", onsubmit: (e) => e.preventDefault() });
  const emit = () => {
    const out = { ...doc, ...d };
    if (!out.pattern) delete out.pattern;
    changed(out);
  };
  const text = (key, label, attrs = {}) => {
    const input = h("input", { value: d[key] ?? "", name: key, ...attrs });
    input.addEventListener("input", () => { d[key] = attrs.type === "number" ? Number(input.value) : input.value; emit(); });
    return field(label, input);
  };
  const active = h("input", { type: "checkbox", checked: d.active, name: "active" });
  active.addEventListener("change", () => { d.active = active.checked; emit(); });
  const on = select(["created", "edited", "created_or_edited", "deleted"], d.trigger.on, { name: "trigger-on" });
  on.addEventListener("change", () => { d.trigger = { ...d.trigger, on: on.value }; emit(); });
  const whenSel = select([["every_edit", "every edit"], ["first_edit", "first edit only"]], d.trigger.when, { name: "trigger-when" });
  whenSel.addEventListener("change", () => { d.trigger = { ...d.trigger, when: whenSel.value }; emit(); });

  const criteriaBox = h("div", { class: "rows" });
  const drawCriteria = () => {
    clear(criteriaBox);
    d.criteria.forEach((c, i) => criteriaBox.append(criterionRow(c, i, () => { drawCriteria(); emit(); }, (x) => { d.criteria.splice(i, 1); drawCriteria(); emit(); if (x) x(); }, emit)));
  };
  const actionsBox = h("div", { class: "rows" });
  const drawActions = () => {
    clear(actionsBox);
    d.actions.forEach((a, i) => actionsBox.append(actionRow(a, i, () => { d.actions.splice(i, 1); drawActions(); emit(); }, emit)));
  };
  drawCriteria();
  drawActions();
  const pattern = h("input", { value: d.pattern || "", name: "pattern", placeholder: "1 AND 2 (default: all)" });
  pattern.addEventListener("input", () => { d.pattern = pattern.value; emit(); });

  append(form, [
    h("fieldset", {}, h("legend", {}, "Rule"),
      h("div", { class: "grid" }, text("id", "Id", { pattern: "[a-z0-9\\-]+", required: true, autocomplete: "off" }), text("name", "Name"),
        text("source", "Source (CRM)"), text("object", "Object"), text("order", "Order", { type: "number", min: 0 })),
      h("div", { class: "field inline" }, active, h("label", { for: (active.id = "rule-active") }, "Active"))),
    h("fieldset", {}, h("legend", {}, "Trigger"), h("div", { class: "grid" }, field("When a record is", on), field("Run on", whenSel))),
    h("fieldset", {}, h("legend", {}, "Criteria"), criteriaBox,
      h("button", { type: "button", onclick: () => { d.criteria.push({ field: "", comparator: "equals", value: "" }); drawCriteria(); emit(); criteriaBox.lastChild?.querySelector("input")?.focus(); } }, "Add criterion"),
      field("Pattern", pattern, "Criteria numbers with AND, OR, NOT and parentheses")),
    h("fieldset", {}, h("legend", {}, "Actions"), actionsBox,
      h("button", { type: "button", onclick: () => { d.actions.push({ type: "webhook", connection: "" }); drawActions(); emit(); } }, "Add action")),
  ]);
  emit();
  return form;
}

function criterionRow(c, i, redraw, remove, emit) {
  const n = i + 1;
  let kind = c.kind || kindOf(c.field, c.value);
  const name = h("input", { value: c.field || "", name: `criterion-${n}-field`, required: true, autocomplete: "off" });
  const kindSel = select(Object.keys(COMPARATORS), kind, { name: `criterion-${n}-kind` });
  const comparator = select(COMPARATORS[kind], c.comparator, { name: `criterion-${n}-comparator` });
  const value = h("input", { value: c.value === undefined || c.value === null ? "" : Array.isArray(c.value) ? c.value.join(", ") : String(c.value), name: `criterion-${n}-value` });
  const fill = () => {
    value.disabled = NO_VALUE.has(comparator.value);
    c.field = name.value;
    c.comparator = comparator.value;
    if (value.disabled) delete c.value;
    else {
      const raw = value.value;
      const list = ["in", "not_in", "between"].includes(comparator.value);
      const typed = (x) => (kind === "number" && x.trim() !== "" && !Number.isNaN(Number(x)) ? Number(x) : kind === "boolean" ? x.trim() === "true" : x.trim());
      c.value = list ? raw.split(",").filter((x) => x.trim()).map(typed) : typed(raw);
    }
    emit();
  };
  const refreshComparators = () => {
    const keep = comparator.value;
    clear(comparator);
    for (const name2 of COMPARATORS[kind]) comparator.append(h("option", { value: name2, selected: name2 === keep }, name2));
  };
  if (!COMPARATORS[kind].includes(c.comparator) && c.comparator) comparator.append(h("option", { value: c.comparator, selected: true }, c.comparator));
  name.addEventListener("input", fill);
  value.addEventListener("input", fill);
  comparator.addEventListener("change", fill);
  kindSel.addEventListener("change", () => { kind = kindSel.value; refreshComparators(); fill(); });
  value.disabled = NO_VALUE.has(comparator.value);
  return h("div", { class: "row criterion", role: "group", "aria-label": `Criterion ${n}` },
    h("span", { class: "num" }, String(n)),
    field("Field", name), field("Type", kindSel), field("Comparator", comparator), field("Value", value),
    h("button", { type: "button", class: "icon danger", "aria-label": `Remove criterion ${n}`, onclick: () => remove() }, "✕"));
}

function actionRow(a, i, remove, emit) {
  const n = i + 1;
  const type = h("input", { value: a.type || "", name: `action-${n}-type`, list: "action-types", required: true, autocomplete: "off" });
  const connection = h("input", { value: a.connection || "", name: `action-${n}-connection`, autocomplete: "off" });
  const writeBack = h("input", { value: a.write_back_field || "", name: `action-${n}-write-back`, autocomplete: "off" });
  const options = h("textarea", { name: `action-${n}-options`, rows: 3, class: "code" });
  options.value = a.options ? JSON.stringify(a.options, null, 1) : "";
  const fill = () => {
    a.type = type.value;
    if (connection.value) a.connection = connection.value; else delete a.connection;
    if (writeBack.value) a.write_back_field = writeBack.value; else delete a.write_back_field;
    options.setCustomValidity("");
    if (options.value.trim()) {
      try { a.options = JSON.parse(options.value); } catch { options.setCustomValidity("options: JSON, e.g. {\"days_until_due\": 30}"); options.reportValidity(); return; }
    } else delete a.options;
    emit();
  };
  for (const el of [type, connection, writeBack, options]) el.addEventListener("input", fill);
  return h("div", { class: "row action", role: "group", "aria-label": `Action ${n}` },
    h("span", { class: "num" }, String(n)),
    field("Type", type), field("Connection", connection), field("Write id back to field", writeBack),
    field("Options (JSON)", options),
    h("datalist", { id: "action-types" }, ACTION_TYPES.map((t) => h("option", { value: t }))),
    h("button", { type: "button", class: "icon danger", "aria-label": `Remove action ${n}`, onclick: remove }, "✕"));
}

export { badge };
