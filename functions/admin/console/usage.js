// Usage: today's sends against each daily limit, and the last 30 days of sent, failed and limited (SVG).
import { api, tp } from "./api.js";
import { h, s, table } from "./dom.js";

export async function usagePage() {
  const usage = await api("GET", tp("/usage?days=30"));
  return h("section", {}, h("h1", {}, "Usage"),
    h("h2", {}, "Today"),
    usage.today.length ? table(["Action type", "Sent", "Daily limit", "Share"], usage.today.map((u) => {
      const share = u.limit ? Math.min(100, Math.round((100 * u.count) / u.limit)) : 0;
      return h("tr", { "data-action-type": u.action_type }, h("td", {}, u.action_type), h("td", {}, String(u.count)), h("td", {}, String(u.limit)),
        h("td", {}, h("meter", { min: 0, max: u.limit || 1, value: u.count, high: (u.limit || 1) * 0.8, optimum: 0, "aria-label": `${u.action_type}: ${share}% of the limit` }), ` ${share}%`));
    }), "Sends today against each daily limit") : h("p", {}, "Nothing sent today."),
    h("h2", {}, `Last ${usage.days.length} days`), chart(usage.days));
}

const SERIES = [["sent", "Sent"], ["failed", "Failed"], ["limited", "Limited"]];

export function chart(days) {
  const W = 640, H = 220, left = 36, bottom = 28, top = 10;
  const max = Math.max(1, ...days.map((d) => d.sent + d.failed + d.limited));
  const step = days.length ? (W - left - 8) / days.length : 0;
  const y = (v) => top + (H - top - bottom) * (1 - v / max);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-labelledby": "chart-title" },
    s("title", { id: "chart-title", text: `Documents sent, failed and limited per day, ${days.length} days` }));
  for (const t of [...new Set([0, Math.round(max / 2), max])]) {
    svg.append(s("line", { x1: left, x2: W - 4, y1: y(t), y2: y(t), class: "grid" }),
      s("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end", class: "axis", text: String(Math.round(t)) }));
  }
  days.forEach((d, i) => {
    let base = 0;
    const x = left + i * step + 1;
    const g = s("g", { class: "day", "data-date": d.date }, s("title", { text: `${d.date}: ${d.sent} sent, ${d.failed} failed, ${d.limited} limited` }));
    for (const [key] of SERIES) {
      const v = d[key] || 0;
      if (v) g.append(s("rect", { x, width: Math.max(1, step - 2), y: y(base + v), height: y(base) - y(base + v), class: `bar ${key}` }));
      base += v;
    }
    const last = i === days.length - 1;
    if ((i % 7 === 0 && days.length - 1 - i >= 4) || last) g.append(s("text", { x: x + step / 2, y: H - 10, "text-anchor": "middle", class: "axis", text: String(d.date).slice(5) }));
    svg.append(g);
  });
  const totals = SERIES.map(([key, label]) => `${label}: ${days.reduce((a, d) => a + (d[key] || 0), 0)}`);
  return h("figure", { class: "chart-wrap" }, svg,
    h("figcaption", {}, h("ul", { class: "legend" }, SERIES.map(([key, label], i) => h("li", {}, h("span", { class: `swatch ${key}` }), totals[i])))));
}
