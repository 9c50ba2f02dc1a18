// The state machine drawn from its ASL definition (SVG, no library), with one run's path on it.
import { h, s } from "./dom.js";

const W = 132, H = 30, GAP_X = 14, GAP_Y = 34, PAD = 16;

function edgesOf(state) {
  const out = [];
  if (state.Next) out.push([state.Next, "next"]);
  if (state.Default) out.push([state.Default, "choice"]);
  for (const c of state.Choices || []) if (c.Next) out.push([c.Next, "choice"]);
  for (const c of state.Catch || []) if (c.Next) out.push([c.Next, "catch"]);
  return out;
}

// Layers by the longest path from StartAt over the forward edges (an edge back to a state on the current
// depth-first path is a loop: drawn, not used for layering).
export function layout(definition) {
  const states = definition.States || {};
  const names = Object.keys(states);
  const back = new Set();
  const seen = new Set(), onPath = new Set(), order = [];
  const visit = (n) => {
    if (!states[n] || seen.has(n)) return;
    seen.add(n); onPath.add(n);
    for (const [to] of edgesOf(states[n])) {
      if (onPath.has(to)) back.add(`${n}>${to}`);
      else visit(to);
    }
    onPath.delete(n); order.push(n);
  };
  visit(definition.StartAt);
  for (const n of names) visit(n);
  order.reverse();
  const layer = new Map(names.map((n) => [n, 0]));
  for (const n of order) for (const [to] of edgesOf(states[n])) {
    if (!back.has(`${n}>${to}`) && states[to]) layer.set(to, Math.max(layer.get(to), layer.get(n) + 1));
  }
  const rows = [];
  for (const n of order) (rows[layer.get(n)] ||= []).push(n);
  // one pass of barycentres: a state sits under the states that lead to it
  const x = new Map();
  rows.forEach((row, i) => {
    if (i > 0) {
      const parents = (n) => order.filter((p) => layer.get(p) < i && edgesOf(states[p]).some(([to]) => to === n)).map((p) => x.get(p));
      row.sort((a, b) => avg(parents(a)) - avg(parents(b)));
    }
    row.forEach((n, j) => x.set(n, j));
  });
  const widest = Math.max(...rows.map((r) => r.length));
  const pos = new Map();
  rows.forEach((row, i) => {
    const offset = ((widest - row.length) * (W + GAP_X)) / 2;
    row.forEach((n, j) => pos.set(n, { x: PAD + offset + j * (W + GAP_X), y: PAD + i * (H + GAP_Y) }));
  });
  const edges = [];
  for (const n of names) for (const [to, kind] of edgesOf(states[n])) if (states[to]) edges.push({ from: n, to, kind, back: back.has(`${n}>${to}`) });
  return { pos, edges, width: PAD * 2 + widest * (W + GAP_X) - GAP_X, height: PAD * 2 + rows.length * (H + GAP_Y) - GAP_Y, states };
}

function avg(list) {
  return list.length ? list.reduce((a, b) => a + b, 0) / list.length : 0;
}

export function drawStateMachine(definition, path) {
  const { pos, edges, width, height, states } = layout(definition);
  const status = new Map((path || []).map((p) => [p.name, p.status]));
  const retries = new Map();
  for (const p of path || []) retries.set(p.name, (retries.get(p.name) || 0) + (p.retries || 0));
  const visited = (path || []).map((p) => p.name);
  const taken = new Set();
  for (let i = 1; i < visited.length; i++) taken.add(`${visited[i - 1]}>${visited[i]}`);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", class: "statemachine",
    "aria-labelledby": "sm-title" },
    s("title", { id: "sm-title", text: `State machine; this run's path: ${visited.join(" → ") || "not known"}` }),
    s("defs", {}, ["plain", "taken"].map((kind) => s("marker", { id: `arrow-${kind}`, viewBox: "0 0 8 8", refX: 7, refY: 4, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L8,4 L0,8 z", class: `arrowhead ${kind}` })))));
  for (const e of edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    const on = taken.has(`${e.from}>${e.to}`);
    let d;
    if (!e.back && b.y > a.y) {
      const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y;
      d = `M${x1},${y1} C${x1},${y1 + GAP_Y / 2} ${x2},${y2 - GAP_Y / 2} ${x2},${y2}`;
    } else { // a loop back up: out of the right side, round, into the right side
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x + W, y2 = b.y + H / 2;
      const bend = Math.max(x1, x2) + 20 + Math.abs(y1 - y2) / 12;
      d = `M${x1},${y1} C${bend},${y1} ${bend},${y2} ${x2},${y2}`;
    }
    svg.append(s("path", { d, class: `edge ${e.kind}${e.back ? " back" : ""}${on ? " taken" : ""}`, "marker-end": `url(#arrow-${on ? "taken" : "plain"})`,
      "data-from": e.from, "data-to": e.to }));
  }
  for (const [name, p] of pos) {
    const st = status.get(name);
    const type = states[name].Type;
    svg.append(s("g", { class: `state ${st || "untouched"} type-${type.toLowerCase()}`, "data-state": name, "data-status": st || "" },
      s("rect", { x: p.x, y: p.y, width: W, height: H, rx: type === "Choice" ? 14 : 4 }),
      s("text", { x: p.x + W / 2, y: p.y + H / 2 + 4, "text-anchor": "middle", text: name.length > 18 ? `${name.slice(0, 17)}…` : name }),
      retries.get(name) ? s("text", { x: p.x + W - 4, y: p.y + 10, "text-anchor": "end", class: "retries", text: `↻${retries.get(name)}` }) : null,
      s("title", { text: `${name} (${type})${st ? `: ${st}` : ""}${retries.get(name) ? `, retried ${retries.get(name)} time(s)` : ""}` })));
  }
  return h("div", { class: "sm-wrap" }, svg,
    h("ul", { class: "legend", "aria-label": "Legend" }, ["passed", "waiting", "retried", "failed", "running", "untouched"].map((k) => h("li", {}, h("span", { class: `swatch ${k}` }), k === "untouched" ? "not on this run's path" : k))));
}
