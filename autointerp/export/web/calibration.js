// The calibration page: the runs of `autointerp calibrate`. Served by `autointerp serve`, it reads
// /api/calibration and /api/calibration/{run}; in a static export (opened from disk, which may load a script
// but not fetch a file) it reads data/calibration.js, a script calling CAL.show({runs: [...]}) with every run
// and its rules. Every string goes into the page through textContent, never HTML.
"use strict";

const CAL = (() => {
  const fmt = (v, d = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
  const rate = (r) => (!r || r.rate === null ? "–" : fmt(r.rate) + (r.ci ? ` [${fmt(r.ci[0])}, ${fmt(r.ci[1])}]` : ""));
  let runs = [];

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function row(table, cells) {
    const tr = el("tr");
    for (const [text, num] of cells) tr.append(el("td", text, num ? "num" : ""));
    document.querySelector(`#${table} tbody`).append(tr);
  }

  function render(run) {
    for (const t of ["scorers", "budgets", "explainers", "rules"]) document.querySelector(`#${t} tbody`).replaceChildren();
    const s = run.summary;
    document.getElementById("subtitle").textContent =
      `${s.calibrated} of ${s.rules} rules of ${run.gold} calibrated on the corpus of ${run.dictionary}; ` +
      `${s.config.seeds} seeds; ${s.grades} grades` +
      Object.entries(s.failed_grades || {}).map(([k, n]) => `, ${n} failed (${k})`).join("") + `; ${run.created_at}`;
    const budgets = s.config.budgets;
    const widest = budgets.includes("all") ? "all" : Math.max(...budgets);
    document.getElementById("widest").textContent = widest === "all" ? "every held-out window" : `${widest} held-out windows`;
    for (const r of s.scorers) {
      if (r.budget === widest) {
        row("scorers", [[r.scorer], [r.category], [r.rules, 1], [rate(r.truth_first), 1], [fmt(r.above_near.rate), 1],
                        [fmt(r.above_unrelated.rate), 1],
                        [rate({ rate: r.near_auroc.value, ci: r.near_auroc.ci }), 1], [fmt(r.coverage.rate), 1]]);
      }
      if (r.category === "all") {
        row("budgets", [[r.scorer], [r.budget, 1], [rate(r.truth_first), 1], [fmt(r.near_auroc.value), 1],
                        [fmt(r.coverage.rate), 1]]);
      }
    }
    for (const e of s.explainers) {
      for (const [scorer, g] of Object.entries(e.scorers)) {
        const gap = g.gap === null ? "–" : (g.gap > 0 ? "+" : "") + fmt(g.gap, 3) +
          (g.gap_ci ? ` [${fmt(g.gap_ci[0], 3)}, ${fmt(g.gap_ci[1], 3)}]` : "");
        row("explainers", [[e.explainer + (e.candidates > 1 ? ` (best of ${e.candidates})` : "")], [scorer],
                           [g.labels, 1], [gap, 1], [fmt(g["within_0.1"]), 1], [fmt(e.names_words.rate), 1]]);
      }
    }
    for (const r of run.rules || []) {
      const ex = Object.entries(r.explainers)[0];
      row("rules", [[r.rule], [r.category], [r.scorer], [r.truth.text], [fmt(r.truth.value, 3), 1],
                    [r.near_miss ? `${r.near_miss.kind}: ${r.near_miss.text}` : "–"],
                    [r.near_miss ? fmt(r.near_miss.value, 3) : "–", 1], [ex ? ex[1].text : "–"],
                    [ex ? fmt(ex[1].value, 3) : "–", 1]]);
    }
    const left = Object.entries(s.left_out || {});
    document.getElementById("left").textContent = left.length
      ? "Left out on this corpus: " + left.map(([k, v]) => `${k} (${v})`).join("; ") : "";
    document.getElementById("status").textContent = `${(run.rules || []).length} rule rows`;
    document.body.dataset.ready = "1";
  }

  async function pick(id) {
    let run = runs.find((r) => r.run_id === id);
    if (!run.rules) {
      const res = await fetch(`api/calibration/${encodeURIComponent(id)}`);
      run = Object.assign(run, await res.json());
    }
    render(run);
  }

  function show(doc) {
    runs = doc.runs;
    const sel = document.getElementById("run");
    sel.replaceChildren();
    for (const r of runs) {
      const o = el("option", `${r.created_at} · ${r.run_id} · ${r.dictionary}`);
      o.value = r.run_id;
      sel.append(o);
    }
    sel.addEventListener("change", () => pick(sel.value));
    if (!runs.length) {
      document.getElementById("status").textContent = "no calibration run yet: `autointerp calibrate --store ...`";
      document.body.dataset.ready = "1";
      return;
    }
    pick(runs[0].run_id);
  }

  async function start() {
    if (location.protocol === "file:") {
      const s = document.createElement("script");
      s.src = "data/calibration.js";
      document.body.append(s);
      return;
    }
    const res = await fetch("api/calibration");
    show({ runs: await res.json() });
  }

  document.addEventListener("DOMContentLoaded", start);
  return { show };
})();
