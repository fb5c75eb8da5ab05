// The page of `autointerp diff --html DIR`: what changed between two runs or two dictionaries, most
// impactful first, and a plot of the grades that moved (each before -> after with its 95% interval). Its
// data is diff-data.js, a script calling DIFF.show({...}) (a page opened from disk may load a script but not
// fetch a file). Every string goes into the page through textContent or setAttribute, never HTML.
"use strict";

const DIFF = (() => {
  const fmt = (v, d = 3) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
  const KINDS = { added: "added", gone: "gone", relabelled: "relabelled", grade: "grade moved" };
  const NS = "http://www.w3.org/2000/svg";

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function grade(v, ci) { return fmt(v) + (ci ? ` [${fmt(ci[0])}, ${fmt(ci[1])}]` : ""); }

  function featureOf(r) {
    return r.feature_a !== undefined && r.feature_b !== undefined && r.feature_a !== r.feature_b
      ? `${r.feature_a} → ${r.feature_b}` : String(r.feature_b !== undefined ? r.feature_b : r.feature_a);
  }

  function cells(r) {
    const feature = featureOf(r);
    if (r.kind === "grade") {
      return [`${KINDS.grade}: ${r.scorer} ${r.delta > 0 ? "+" : ""}${fmt(r.delta)}`, feature,
              grade(r.value_a, r.ci_a), grade(r.value_b, r.ci_b) + " — " + (r.label_b || "")];
    }
    if (r.kind === "relabelled") {
      return [`${KINDS.relabelled} (distance ${fmt(r.distance, 2)})`, feature, r.label_a, r.label_b];
    }
    return [KINDS[r.kind], feature, r.label_a || "", r.label_b || ""];
  }

  // The filter's choices: each kind of change, with how many there are and how many are listed here.
  function filters(doc) {
    const c = doc.counts;
    const meaning = doc.meaning === undefined ? 0.3 : doc.meaning;
    const listed = (test) => doc.rows.filter(test).length;
    return [
      ["", "every change", c.added + c.gone + c.relabelled + c.grade, () => true],
      ["added", "added", c.added, (r) => r.kind === "added"],
      ["gone", "gone", c.gone, (r) => r.kind === "gone"],
      ["relabelled", "relabelled", c.relabelled, (r) => r.kind === "relabelled"],
      ["meaning", "changed meaning", c.changed_meaning, (r) => r.kind === "relabelled" && r.distance >= meaning],
      ["up", "grade up", c.grade_up, (r) => r.kind === "grade" && r.delta > 0],
      ["down", "grade down", c.grade_down, (r) => r.kind === "grade" && r.delta <= 0],
    ].map(([value, name, total, test]) => ({ value, name, total: total || 0, shown: listed(test), test }));
  }

  // A dumbbell per grade row: before (hollow) and after (filled, green up, red down), each with its 95%
  // interval; the rows sorted by how far the grade moved; each row's name links to its row in the table.
  function plot(doc) {
    const rows = doc.rows.map((r, i) => [r, i]).filter(([r]) => r.kind === "grade" && r.ci_a && r.ci_b)
      .sort(([p], [q]) => p.delta - q.delta);
    const box = document.getElementById("plot");
    box.replaceChildren();
    if (!rows.length) {
      box.append(el("p", "No grade moved beyond its interval among the rows listed.", "muted"));
      return;
    }
    const W = 900, L = 210, R = 20, T = 30, B = 36, H = 22;
    const h = T + B + H * rows.length;
    const vals = rows.flatMap(([r]) => [r.ci_a[0], r.ci_a[1], r.ci_b[0], r.ci_b[1], r.value_a, r.value_b]);
    let lo = Math.min(...vals), hi = Math.max(...vals);
    const pad = (hi - lo) * 0.05 || 0.05;
    lo -= pad; hi += pad;
    const x = (v) => L + (v - lo) / (hi - lo) * (W - L - R);
    const s = svg("svg", { viewBox: `0 0 ${W} ${h}`, width: W, height: h, role: "img", id: "grade-plot",
                           class: "dumbbell", "aria-label": "grades before and after, with their 95% intervals" });
    s.append(svg("title", {}, "each grade that moved beyond its interval: before (hollow) and after (filled), " +
                              "with the 95% interval of each"));
    const step = [0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1].find((st) => (hi - lo) / st <= 8) || 1;
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
      const t = Math.round(v / step) * step;
      s.append(svg("line", { x1: x(t), x2: x(t), y1: T - 6, y2: h - B, class: t === 0 ? "zero" : "grid" }),
               svg("text", { x: x(t), y: h - B + 14, "text-anchor": "middle", class: "tick" }, fmt(t, 2)));
    }
    s.append(svg("text", { x: (L + W - R) / 2, y: h - 6, "text-anchor": "middle", class: "name" },
                 "grade (95% interval): before ○ → after ●"),
             svg("text", { x: L - 8, y: T - 12, "text-anchor": "end", class: "name" }, "feature · scorer"));
    rows.forEach(([r, i], k) => {
      const y = T + H * k + H / 2;
      const way = r.delta > 0 ? "up" : "down";
      const g = svg("g", { class: `move ${way}`, "data-feature": featureOf(r), "data-scorer": r.scorer,
                           "data-value-a": r.value_a, "data-value-b": r.value_b,
                           "data-ci-a": r.ci_a.join(","), "data-ci-b": r.ci_b.join(",") });
      g.append(svg("title", {}, `feature ${featureOf(r)}, ${r.scorer}: ${grade(r.value_a, r.ci_a)} → ` +
                                `${grade(r.value_b, r.ci_b)} (${r.delta > 0 ? "+" : ""}${fmt(r.delta)})` +
                                (r.label_b ? ` — ${r.label_b}` : "")));
      const name = svg("a", { href: `#change-${i}` });
      name.append(svg("text", { x: L - 8, y: y + 4, "text-anchor": "end", class: "row-name" },
                      `${featureOf(r)} · ${r.scorer}`));
      g.append(name,
               svg("line", { x1: x(r.ci_a[0]), x2: x(r.ci_a[1]), y1: y - 3, y2: y - 3, class: "ci before" }),
               svg("line", { x1: x(r.ci_b[0]), x2: x(r.ci_b[1]), y1: y + 3, y2: y + 3, class: "ci after" }),
               svg("line", { x1: x(r.value_a), x2: x(r.value_b), y1: y, y2: y, class: "arrow" }),
               svg("circle", { cx: x(r.value_a), cy: y, r: 4, class: "before" }),
               svg("circle", { cx: x(r.value_b), cy: y, r: 4.5, class: "after" }));
      s.append(g);
    });
    box.append(s);
  }

  function show(doc) {
    const c = doc.counts;
    const sub = [`${doc.a} → ${doc.b}`, `features paired by ${doc.paired_by}`];
    if (doc.similarity) sub.push(`threshold: ${doc.similarity.why}`);
    if (doc.features) sub.push(`features ${doc.features}`);
    document.getElementById("subtitle").textContent = sub.join("; ");
    const counts = document.getElementById("counts");
    counts.append(el("p", `${c.added} added, ${c.gone} gone, ${c.relabelled} relabelled (${c.changed_meaning} ` +
                           `changed meaning), ${c.grade} grades moved beyond their intervals; ${c.pairs} labelled ` +
                           `pairs compared (${c.labelled_a} labels before, ${c.labelled_b} after)`));
    const apart = [];
    if (c.not_in_b) apart.push(`${c.not_in_b} features not in run B`);
    if (c.not_in_a) apart.push(`${c.not_in_a} features not in run A`);
    if (apart.length) counts.append(el("p", apart.join("; ") + " (not compared)", "muted not-in"));
    for (const [scorer, m] of Object.entries(doc.grades_moved || {})) {
      counts.append(el("p", `${scorer}: ${m.up} up, ${m.down} down`, "muted"));
    }
    const choices = filters(doc);
    const sel = document.getElementById("kind");
    sel.replaceChildren();
    for (const f of choices) {
      const o = el("option", `${f.name}: ${f.total}` + (f.shown < f.total ? ` (${f.shown} listed)` : ""));
      o.value = f.value;
      sel.append(o);
    }
    const render = () => {
      const body = document.getElementById("rows");
      body.replaceChildren();
      const choice = choices.find((f) => f.value === sel.value) || choices[0];
      let shown = 0;
      doc.rows.forEach((r, i) => {
        if (!choice.test(r)) return;
        const tr = el("tr");
        tr.className = "change-" + r.kind;
        tr.id = `change-${i}`;
        tr.append(el("td", fmt(r.impact), "num"));
        const [what, feature, before, after] = cells(r);
        tr.append(el("td", what), el("td", feature, "num"), el("td", before), el("td", after),
                  el("td", r.n_firing, "num"));
        body.append(tr);
        shown += 1;
      });
      document.getElementById("status").textContent =
        `${shown} of the ${doc.rows.length} most impactful changes shown (each kind keeps its share)`;
      document.body.dataset.ready = "1";
    };
    sel.addEventListener("change", render);
    plot(doc);
    render();
  }

  return { show };
})();
