// The YAML the console reads and writes: the subset rule files use (block maps and lists, flow {} and [],
// plain and quoted scalars, | and > blocks, comments), with the line of every value so that a validation
// problem ("criteria.0.comparator: ...") is shown at its line. No library: nothing is loaded from elsewhere.

export class YamlError extends Error {
  constructor(message, line) {
    super(`line ${line}: ${message}`);
    this.line = line;
  }
}

function stripComment(text) {
  let quote = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === "\\" && quote === '"') i++;
      else if (c === quote) quote = null;
    } else if (c === '"' || c === "'") {
      if (i === 0 || /[\s\[{,:]/.test(text[i - 1])) quote = c;
    } else if (c === "#" && (i === 0 || /\s/.test(text[i - 1]))) {
      return text.slice(0, i);
    }
  }
  return text;
}

function scalar(text, line) {
  const t = text.trim();
  if (t.startsWith('"')) {
    if (!t.endsWith('"') || t.length < 2) throw new YamlError("unclosed double quote", line);
    try { return JSON.parse(t.replace(/\\'/g, "'")); } catch { throw new YamlError(`bad string ${t}`, line); }
  }
  if (t.startsWith("'")) {
    if (!t.endsWith("'") || t.length < 2) throw new YamlError("unclosed single quote", line);
    return t.slice(1, -1).replace(/''/g, "'");
  }
  if (t === "" || t === "~" || t === "null" || t === "Null" || t === "NULL") return null;
  if (/^(true|True|TRUE)$/.test(t)) return true;
  if (/^(false|False|FALSE)$/.test(t)) return false;
  if (/^[-+]?\d+$/.test(t)) return Number.parseInt(t, 10);
  if (/^[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$/.test(t)) return Number.parseFloat(t);
  if (/^[&*!|>%@`]/.test(t)) throw new YamlError(`unsupported YAML at "${t.slice(0, 20)}": quote the value`, line);
  return t;
}

// Flow collections: {a: 1, b: [x, "y"]}
function parseFlow(text, line, path, lines) {
  let i = 0;
  const ws = () => { while (i < text.length && /\s/.test(text[i])) i++; };
  const value = (p) => {
    ws();
    lines.set(p, line);
    if (text[i] === "{") {
      i++; const out = {};
      ws();
      if (text[i] === "}") { i++; return out; }
      for (;;) {
        ws();
        const key = String(atom(true, p));
        ws();
        if (text[i] !== ":") throw new YamlError(`expected ":" after "${key}"`, line);
        i++;
        const sub = p ? `${p}.${key}` : key;
        out[key] = value(sub);
        ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i] === "}") { i++; return out; }
        throw new YamlError("expected \",\" or \"}\" in a {...} mapping", line);
      }
    }
    if (text[i] === "[") {
      i++; const out = [];
      ws();
      if (text[i] === "]") { i++; return out; }
      for (;;) {
        out.push(value(p ? `${p}.${out.length}` : String(out.length)));
        ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i] === "]") { i++; return out; }
        throw new YamlError("expected \",\" or \"]\" in a [...] list", line);
      }
    }
    return atom(false, p);
  };
  const atom = (isKey) => {
    ws();
    const start = i;
    if (text[i] === '"' || text[i] === "'") {
      const q = text[i++];
      while (i < text.length && text[i] !== q) { if (text[i] === "\\" && q === '"') i++; i++; }
      if (i >= text.length) throw new YamlError("unclosed quote", line);
      i++;
      return scalar(text.slice(start, i), line);
    }
    while (i < text.length && !/[,\]}]/.test(text[i]) && !(text[i] === ":" && (isKey || /\s/.test(text[i + 1] ?? " ")))) i++;
    return scalar(text.slice(start, i), line);
  };
  const result = value(path);
  ws();
  if (i < text.length) throw new YamlError(`unexpected "${text.slice(i, i + 10)}"`, line);
  return result;
}

function splitKey(text) {
  // "key: value" -> [key, value]; null when the text is not a mapping entry
  let i = 0;
  if (text[0] === '"' || text[0] === "'") {
    const q = text[0]; i = 1;
    while (i < text.length && text[i] !== q) { if (text[i] === "\\" && q === '"') i++; i++; }
    i++;
    if (text[i] !== ":") return null;
    return [scalar(text.slice(0, i), 0), text.slice(i + 1)];
  }
  for (; i < text.length; i++) {
    if (text[i] === ":" && (i + 1 === text.length || text[i + 1] === " ")) return [text.slice(0, i).trim(), text.slice(i + 1)];
    if (text[i] === "{" || text[i] === "[" || text[i] === '"' || text[i] === "'") return null;
  }
  return null;
}

export function parseYaml(source) {
  const lines = new Map(); // "criteria.0.comparator" -> line number (1-based)
  const rows = [];
  source.replace(/\r\n?/g, "\n").split("\n").forEach((raw, n) => {
    if (/\t/.test(raw.match(/^\s*/)[0])) throw new YamlError("indent with spaces, not tabs", n + 1);
    const body = stripComment(raw);
    if (body.trim() === "" || body.trim() === "---") return;
    rows.push({ indent: body.length - body.trimStart().length, text: body.trim(), line: n + 1, raw });
  });
  let r = 0;

  function inline(text, row, path) {
    const t = text.trim();
    lines.set(path, row.line);
    if (t.startsWith("{") || t.startsWith("[")) {
      // a flow collection may go on over the next lines until its brackets close
      let whole = t;
      const balance = (s) => { let d = 0, q = null; for (const c of s) { if (q) { if (c === q) q = null; } else if (c === '"' || c === "'") q = c; else if (c === "{" || c === "[") d++; else if (c === "}" || c === "]") d--; } return d; };
      while (balance(whole) > 0 && r < rows.length) whole += " " + rows[r++].text;
      return parseFlow(whole, row.line, path, lines);
    }
    const block = t.match(/^([|>])([-+]?)$/);
    if (block) {
      const parts = [];
      const minIndent = row.indent + 1;
      let first = null;
      // block scalars keep blank lines: read them from the source rows between
      while (r < rows.length && rows[r].indent >= minIndent) {
        const next = rows[r++];
        first ??= next.indent;
        parts.push(next.raw.slice(first));
      }
      let out = block[1] === "|" ? parts.join("\n") : parts.join(" ");
      if (block[2] !== "-") out += "\n";
      return out;
    }
    return scalar(t, row.line);
  }

  function parseBlock(indent, path) {
    const row = rows[r];
    if (row.text.startsWith("- ") || row.text === "-") return parseList(row.indent, path);
    return parseMap(indent, path);
  }

  function parseList(indent, path) {
    const out = [];
    while (r < rows.length && rows[r].indent === indent && (rows[r].text.startsWith("- ") || rows[r].text === "-")) {
      const row = rows[r];
      const sub = path ? `${path}.${out.length}` : String(out.length);
      const rest = row.text.slice(1).trimStart();
      lines.set(sub, row.line);
      if (rest === "") {
        r++;
        out.push(r < rows.length && rows[r].indent > indent ? parseBlock(rows[r].indent, sub) : null);
      } else if (splitKey(rest) && !rest.startsWith("{")) {
        // "- key: value" starts a mapping indented where "key" is
        const col = indent + (row.text.length - rest.length);
        rows[r] = { ...row, indent: col, text: rest };
        out.push(parseMap(col, sub));
      } else {
        r++;
        out.push(inline(rest, row, sub));
      }
    }
    return out;
  }

  function parseMap(indent, path) {
    const out = {};
    while (r < rows.length && rows[r].indent === indent) {
      const row = rows[r];
      if (row.text.startsWith("- ")) break;
      const entry = splitKey(row.text);
      if (!entry) throw new YamlError(`expected "key: value", found "${row.text.slice(0, 40)}"`, row.line);
      const [key, rest] = entry;
      if (Object.hasOwn(out, key)) throw new YamlError(`"${key}" appears twice`, row.line);
      const sub = path ? `${path}.${key}` : String(key);
      r++;
      if (rest.trim() === "") {
        lines.set(sub, row.line);
        if (r < rows.length && (rows[r].indent > indent || (rows[r].indent === indent && rows[r].text.startsWith("- ")))) {
          out[key] = parseBlock(rows[r].indent, sub);
          lines.set(sub, row.line);
        } else out[key] = null;
      } else out[key] = inline(rest, row, sub);
    }
    if (r < rows.length && rows[r].indent > indent) throw new YamlError("indentation does not line up", rows[r].line);
    return out;
  }

  if (rows.length === 0) return { value: null, lines };
  const value = parseBlock(rows[0].indent, "");
  if (r < rows.length) throw new YamlError("indentation does not line up", rows[r].line);
  return { value, lines };
}

// ---------------------------------------------------------------------------------------------- writing
const PLAIN = /^[A-Za-z_][\w .@/()+-]*$/;
const RESERVED = /^(true|false|null|yes|no|on|off|~)$/i;

function dumpScalar(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "boolean" || typeof v === "number") return String(v);
  const s = String(v);
  if (PLAIN.test(s) && !RESERVED.test(s) && !/\s$/.test(s) && !s.includes(": ") && !s.includes(" #")) return s;
  return JSON.stringify(s);
}

function isScalar(v) { return v === null || typeof v !== "object"; }

function flow(v) {
  if (isScalar(v)) return dumpScalar(v);
  if (Array.isArray(v)) return `[${v.map(flow).join(", ")}]`;
  return `{${Object.entries(v).map(([k, x]) => `${dumpScalar(k)}: ${flow(x)}`).join(", ")}}`;
}

// Small mappings and lists of scalars on one line, as the example rules are written.
function short(v) {
  if (isScalar(v)) return true;
  const text = flow(v);
  const depth = JSON.stringify(v).split("").filter((c) => c === "{" || c === "[").length;
  return text.length <= 72 && depth <= 2;
}

export function dumpYaml(value, indent = 0) {
  const pad = " ".repeat(indent);
  if (Array.isArray(value)) {
    if (value.length === 0) return `${pad}[]\n`;
    return value.map((item) => {
      if (short(item)) return `${pad}- ${flow(item)}\n`;
      const inner = dumpYaml(item, indent + 2);
      return `${pad}- ${inner.slice(indent + 2)}`;
    }).join("");
  }
  if (value && typeof value === "object") {
    return Object.entries(value).map(([k, v]) => {
      const key = dumpScalar(k);
      if (typeof v === "string" && v.includes("\n")) {
        const body = v.replace(/\n$/, "").split("\n").map((l) => `${pad}  ${l}`).join("\n");
        return `${pad}${key}: |${v.endsWith("\n") ? "" : "-"}\n${body}\n`;
      }
      if (short(v) && !(Array.isArray(v) && v.some((x) => !isScalar(x)) && flow(v).length > 40)) return `${pad}${key}: ${flow(v)}\n`;
      if (Array.isArray(v)) return `${pad}${key}:\n${dumpYaml(v, indent + 2)}`;
      return `${pad}${key}:\n${dumpYaml(v, indent + 2)}`;
    }).join("");
  }
  return `${pad}${dumpScalar(value)}\n`;
}

// The nearest line for a field path: "actions.0.options.due_days" falls back to "actions.0.options", ...
export function lineOf(lines, path) {
  let p = path;
  while (p) {
    if (lines.has(p)) return lines.get(p);
    p = p.includes(".") ? p.slice(0, p.lastIndexOf(".")) : "";
  }
  return 1;
}
