// The browser's plots: SVG drawn in the page from the numbers the API (or the static export's data scripts)
// gives, with no charting library and nothing from a CDN. Each bar, mark and point carries its numbers as
// data- attributes and a <title> (what a hover shows); every text goes in through textContent.
"use strict";

const PLOT = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const M = { l: 52, r: 14, t: 12, b: 38 };  // margins: room for the axes' ticks and names

  function s(tag, attrs, ...kids) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v; else e.setAttribute(k, String(v));
    }
    for (const c of kids) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  const tip = (text) => s("title", { text });

  function niceStep(span, n) {  // a step of 1, 2 or 5 times a power of ten giving about n ticks over span
    const raw = span / Math.max(1, n);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    return [1, 2, 5, 10].map((m) => m * p).find((st) => st >= raw) || raw;
  }

  function ticks(lo, hi, n) {
    if (!(hi > lo)) return [lo];
    const st = niceStep(hi - lo, n);
    const out = [];
    for (let v = Math.ceil(lo / st) * st; v <= hi + st * 1e-9; v += st) out.push(Math.round(v / st) * st);
    return out;
  }

  function frame(w, h, title, id) {
    const svg = s("svg", { viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: "img", "aria-label": title,
                           class: "plot", ...(id ? { id } : {}) });
    svg.append(tip(title));
    return svg;
  }

  // axes: x and y map values to pixels; xt, yt: tick values; fx, fy: their labels
  function axes(svg, o) {
    const { w, h, x, y, xt, yt, fx, fy, xlabel, ylabel } = o;
    const g = s("g", { class: "axes" });
    g.append(s("line", { x1: M.l, y1: h - M.b, x2: w - M.r, y2: h - M.b, class: "axis" }),
             s("line", { x1: M.l, y1: M.t, x2: M.l, y2: h - M.b, class: "axis" }));
    for (const v of xt) {
      g.append(s("line", { x1: x(v), x2: x(v), y1: h - M.b, y2: h - M.b + 4, class: "axis" }),
               s("text", { x: x(v), y: h - M.b + 15, "text-anchor": "middle", class: "tick", text: fx(v) }));
    }
    for (const v of yt) {
      g.append(s("line", { x1: M.l - 4, x2: M.l, y1: y(v), y2: y(v), class: "axis" }),
               s("line", { x1: M.l, x2: w - M.r, y1: y(v), y2: y(v), class: "grid" }),
               s("text", { x: M.l - 6, y: y(v) + 4, "text-anchor": "end", class: "tick", text: fy(v) }));
    }
    g.append(s("text", { x: (M.l + w - M.r) / 2, y: h - 4, "text-anchor": "middle", class: "name", text: xlabel }),
             s("text", { x: 12, y: (M.t + h - M.b) / 2, "text-anchor": "middle", class: "name",
                         transform: `rotate(-90 12 ${(M.t + h - M.b) / 2})`, text: ylabel }));
    svg.append(g);
  }

  const fmtNum = (v) => (Math.abs(v) >= 1000 ? v.toLocaleString() : String(+v.toFixed(3)));

  // A histogram of equal bins from lo to hi. o: {counts, lo, hi, title, xlabel, ylabel, ylog (a log scale for
  // counts that span decades), fx (x tick labels), binText(i, lo, hi, n) (a bar's hover), marks: [{x, text,
  // kind}] (vertical lines: quantile windows, this feature), id}
  function histogram(o) {
    const w = o.width || 470, h = o.height || 190;
    const n = o.counts.length, top = Math.max(1, ...o.counts);
    const span = o.hi - o.lo || 1;
    const x = (v) => M.l + (w - M.l - M.r) * (v - o.lo) / span;
    const yv = o.ylog ? (c) => Math.log10(1 + c) / Math.log10(1 + top) : (c) => c / top;
    const y = (c) => h - M.b - (h - M.t - M.b) * yv(c);
    const svg = frame(w, h, o.title, o.id);
    const yt = o.ylog ? [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9].filter((v) => v <= top) : ticks(0, top, 4);
    axes(svg, { w, h, x, y, xt: ticks(o.lo, o.hi, 6), yt, fx: o.fx || fmtNum, fy: fmtNum,
                xlabel: o.xlabel, ylabel: o.ylabel });
    const bars = s("g", { class: "bars" });
    o.counts.forEach((c, i) => {
      const a = o.lo + span * i / n, b = o.lo + span * (i + 1) / n;
      const r = s("rect", { x: x(a) + 0.5, width: Math.max(0.5, x(b) - x(a) - 1), y: y(c), height: h - M.b - y(c),
                            class: "bar", "data-count": c, "data-lo": +a.toFixed(6), "data-hi": +b.toFixed(6) });
      r.append(tip(o.binText ? o.binText(i, a, b, c) : `${fmtNum(a)} to ${fmtNum(b)}: ${c.toLocaleString()}`));
      bars.append(r);
    });
    svg.append(bars);
    for (const m of o.marks || []) {
      const line = s("line", { x1: x(m.x), x2: x(m.x), y1: M.t, y2: h - M.b, class: "mark " + (m.kind || ""),
                               "data-value": m.x });
      line.append(tip(m.text));
      svg.append(line);
      if (m.label) svg.append(s("text", { x: x(m.x) + 3, y: M.t + 10, class: "mark-label", text: m.label }));
    }
    return svg;
  }

  // A scatter of points {x, y, lo, hi (y's 95% interval, may be null), href, text, feature}; x on a log10
  // scale when o.xlog (x given as the value, drawn at its log). Each point is a link.
  function scatter(o) {
    const w = o.width || 470, h = o.height || 190;
    const pts = o.points;
    const xs = pts.map((p) => (o.xlog ? Math.log10(p.x) : p.x));
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    if (o.xlog) { x0 = Math.floor(x0); x1 = Math.ceil(x1); }
    if (!(x1 > x0)) { x0 -= 1; x1 += 1; }
    const ys = pts.flatMap((p) => [p.y, p.lo, p.hi]).filter((v) => v !== null && v !== undefined);
    const y0 = Math.min(o.y0 === undefined ? 0 : o.y0, ...ys), y1 = Math.max(o.y1 === undefined ? 1 : o.y1, ...ys);
    const x = (v) => M.l + (w - M.l - M.r) * (v - x0) / (x1 - x0);
    const y = (v) => h - M.b - (h - M.t - M.b) * (v - y0) / (y1 - y0 || 1);
    const svg = frame(w, h, o.title, o.id);
    axes(svg, { w, h, x, y, xt: o.xlog ? ticks(x0, x1, 8).filter((v) => Number.isInteger(v)) : ticks(x0, x1, 6),
                yt: ticks(y0, y1, 5), fx: o.xlog ? (v) => `1e${v}` : fmtNum, fy: fmtNum,
                xlabel: o.xlabel, ylabel: o.ylabel });
    const g = s("g", { class: "points" });
    pts.forEach((p, i) => {
      const a = s("a", { href: p.href, class: "pt", "data-feature": p.feature, "data-x": p.x, "data-y": p.y });
      if (p.lo !== null && p.lo !== undefined && p.hi !== null && p.hi !== undefined) {
        a.append(s("line", { x1: x(xs[i]), x2: x(xs[i]), y1: y(p.lo), y2: y(p.hi), class: "ci" }));
      }
      const c = s("circle", { cx: x(xs[i]), cy: y(p.y), r: 2.6 });
      c.append(tip(p.text));
      a.append(c);
      g.append(a);
    });
    svg.append(g);
    return svg;
  }

  return { histogram, scatter };
})();
