// The autointerp feature browser. Served by `autointerp serve`, the pages read its JSON API (/api/...):
// the server sorts, filters, pages and searches. Opened from disk (file://), they read the static
// export's data scripts (data/meta.js, data/index-K.js, data/f/K.js, data/overview.js calling AI.meta /
// AI.shard / AI.features / AI.overview), since a page from disk may load a script but not fetch a file. The
// plots are SVG drawn by plots.js. Every string from the
// data goes into the page through textContent or setAttribute, never through innerHTML: a label or
// token of "<script>" shows as those characters.
"use strict";

const AI = (() => {
  const got = { meta: null, shards: {}, features: {}, overview: null };
  const PAGE = 100;
  const SEARCH_HITS = 20;  // each hit brings its top window: a short list answers fast
  const served = location.protocol === "http:" || location.protocol === "https:";
  const dictParam = new URLSearchParams(location.search).get("dictionary");

  function load(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      s.onload = () => { s.remove(); resolve(); };
      s.onerror = () => { s.remove(); reject(new Error("cannot load " + src)); };
      document.head.appendChild(s);
    });
  }

  async function api(path, params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") q.set(k, v);
    if (dictParam && !q.has("dictionary")) q.set("dictionary", dictParam);
    const r = await fetch(`api/${path}${q.toString() ? "?" + q : ""}`);
    const body = await r.json();
    if (!r.ok) throw Object.assign(new Error(body.error || r.statusText), { status: r.status });
    return body;
  }

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  const fmt = (v, digits = 3) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
  const shown = (tok) => tok.replace(/\n/g, "\u21b5").replace(/\t/g, "\u2192").replace(/\r/g, "\u240d");

  function setText(id, text) { document.getElementById(id).textContent = text; }

  // -- the index ---------------------------------------------------------------------------------------

  async function meta() {
    if (!served) { await load("data/meta.js"); return got.meta; }
    const ds = await api("dictionaries");
    const m = (dictParam && ds.find((d) => d.name === dictParam)) || ds[0];
    got.meta = m;
    return m;
  }

  // what each scorer's grade measures (the API's `measures`), one sentence each
  function measures(box, names, all) {
    box.replaceChildren();
    for (const n of names) {
      if (!all || !all[n]) continue;
      box.append(el("dt", { text: n }), el("dd", { text: all[n] }));
    }
  }

  async function overview() {
    if (got.overview) return got.overview;
    if (served) got.overview = await api("overview");
    else {
      try { await load("data/overview.js"); } catch (err) { got.overview = null; }  // an export made before plots
    }
    return got.overview;
  }

  const log10 = (v) => Math.log10(v);
  const figure = (title, svg, caption) => el("figure", {}, el("div", { class: "fig-title", text: title }), svg,
                                             el("figcaption", { text: caption }));
  const decade = (v) => `1e${Number.isInteger(v) ? v : v.toFixed(1)}`;

  // the index's plots: the dictionary's features by density, and a grade against density (each point a link)
  async function indexPlots() {
    const box = document.getElementById("plots");
    let o;
    try { o = await overview(); } catch (err) { o = null; }
    if (!o) return;
    const d = o.density;
    const figs = [];
    if (d.live) {
      figs.push(figure("Features by density", PLOT.histogram({
        id: "density-hist", counts: d.counts, lo: d.lo, hi: d.hi, fx: decade, ylog: true,
        title: "Features by density", xlabel: "density (share of tokens it fires on, log scale)",
        ylabel: "features", binText: (i, a, b, n) => `density ${decade(a)} to ${decade(b)}: ${n.toLocaleString()} features`,
      }), `${d.live.toLocaleString()} features fire; ${d.dead.toLocaleString()} never do (not plotted).`));
    }
    const sc = o.scatter;
    if (sc.scorer && sc.points.length) {
      const pts = sc.points.map(([f, dens, v, lo, hi]) => ({
        feature: f, x: dens, y: v, lo, hi, href: "feature.html" + location.search + "#" + f,
        text: `feature ${f}: ${sc.scorer} ${fmt(v)}` + (lo !== null && hi !== null ? ` [${fmt(lo)}, ${fmt(hi)}]` : "") +
              `, density ${fmt(dens, 6)}` }));
      figs.push(figure(`${sc.scorer} grade against density`, PLOT.scatter({
        id: "grade-scatter", points: pts, xlog: true, title: `${sc.scorer} grade against density`,
        xlabel: "density (log scale)", ylabel: `${sc.scorer} (95% interval)`,
      }), (sc.points.length < sc.total ? `${sc.points.length.toLocaleString()} of ${sc.total.toLocaleString()} ` +
           "graded features (a fixed sample)" : `${sc.total.toLocaleString()} graded features`) +
          "; the lines are 95% intervals; click a point for its page."));
    }
    box.replaceChildren(...figs);
  }

  async function indexPage() {
    const m = await meta();
    document.title = `${m.dictionary || m.name} — autointerp`;
    setText("title", m.dictionary || m.name);
    setText("subtitle", `${m.model} · ${m.hook} · ${m.kind} · ${m.width.toLocaleString()} features, ` +
                        `${m.labelled.toLocaleString()} labelled`);
    measures(document.getElementById("measures"), m.scorers, m.measures);
    // row: [feature, label, density, max, n_firing, ...values, ...their 95% half-widths, ...lower bounds,
    // ...why a grade has no value]; `sort`/`by` are the API's names for each sortable column; a scorer's cell
    // shows its value ± the half-width of its interval, or why it has none
    const k = m.scorers.length;
    const cols = [{ key: 0, name: "feature", sort: "feature", num: true, digits: 0 }, { key: 1, name: "label" },
                  ...m.scorers.map((s, i) => ({ key: 5 + i, name: s, sort: s, num: true, digits: 3, half: 5 + k + i,
                                                why: 5 + 3 * k + i })),
                  { key: 2, name: "density", sort: "density", num: true, digits: 5 },
                  { key: 3, name: "max", sort: "max", num: true, digits: 2 }];
    const lowers = m.scorers.map((s, i) => ({ key: 5 + 2 * k + i, name: `${s} (lower bound)`, sort: s, by: "lower",
                                              num: true }));
    const sorts = [...lowers, ...cols.filter((c) => c.sort).map((c) => (c.half ? { ...c, name: `${c.name} (value)` } : c))];
    const state = { filter: "", sort: 0, desc: false, page: 0, search: "" };
    if (m.scorers.length) {  // best first by the lower end of the interval (sure and good), by simulation when there is one
      state.sort = lowers[Math.max(0, m.scorers.indexOf("simulation"))].key;
      state.desc = true;
    }
    const sortSel = document.getElementById("sort");
    for (const c of sorts) sortSel.append(el("option", { value: String(c.key), text: c.name }));
    sortSel.value = String(state.sort);
    const head = document.getElementById("head");
    for (const c of cols) {
      const th = el("th", { class: c.num ? "num" : "", "data-key": String(c.key), text: c.name });
      th.addEventListener("click", () => {
        if (!c.sort) return;
        if (state.sort === c.key) state.desc = !state.desc; else { state.sort = c.key; state.desc = c.num && c.key !== 0; }
        sortSel.value = String(state.sort);
        state.page = 0;
        refresh();
      });
      head.append(th);
    }

    function gradeCell(r, c) {
      const v = r[c.key], half = r[c.half], why = r[c.why];
      if (v !== null && v !== undefined) {
        return el("td", { class: "num", text: fmt(v, c.digits) + (half !== null && half !== undefined ? " ± " + fmt(half, 2) : "") });
      }
      if (!why) return el("td", { class: "num", text: "–" });
      return el("td", { class: "num ungraded", title: why }, "–", el("small", { class: "why", text: why }));
    }

    function row(r, extra) {
      const tr = el("tr", { "data-feature": String(r[0]) });
      for (const c of cols) {
        if (c.key === 0) tr.append(el("td", { class: "num" }, el("a", { href: "feature.html" + location.search + "#" + r[0], text: String(r[0]) })));
        else if (c.key === 1) tr.append(el("td", { class: "label", text: r[1] || "" }, extra || null));
        else if (c.half) tr.append(gradeCell(r, c));
        else tr.append(el("td", { class: "num", text: fmt(r[c.key], c.digits) }));
      }
      return tr;
    }

    function show(rows, total, note) {
      const pages = Math.max(1, Math.ceil(total / PAGE));
      const body = document.getElementById("rows");
      body.replaceChildren(...rows);
      setText("page", `page ${state.page + 1} of ${pages} · ${total.toLocaleString()} shown` + (note || ""));
      document.getElementById("order").textContent = state.desc ? "descending" : "ascending";
      document.body.setAttribute("data-ready", "1");
    }

    // an API row (a feature, or a search hit) as an index row
    const half = (ci) => (ci ? (ci[1] - ci[0]) / 2 : null);
    const flat = (r, n) => [r.feature, r.label, r.density, r.max, n, ...m.scorers.map((s) => r.scores[s]),
                            ...m.scorers.map((s) => half(r.ci[s])), ...m.scorers.map((s) => (r.ci[s] ? r.ci[s][0] : null)),
                            ...m.scorers.map((s) => (r.why && r.why[s]) || null)];

    // served: every view is one API request; from disk: the shards are loaded and sorted in the page
    let render;
    if (served) {
      let asked = 0;
      render = async () => {
        const mine = ++asked;
        document.body.removeAttribute("data-ready");
        const c = sorts.find((x) => x.key === state.sort);
        try {
          const p = await api("features", { sort: c.sort, by: c.by || "value", order: state.desc ? "desc" : "asc",
                                            q: state.filter.trim(), offset: state.page * PAGE, limit: PAGE });
          if (mine !== asked) return;  // a newer view was asked for meanwhile
          const pages = Math.max(1, Math.ceil(p.total / PAGE));
          if (state.page >= pages && p.total) { state.page = pages - 1; return render(); }
          show(p.rows.map((r) => row(flat(r, r.n_firing))), p.total);
          setText("status", "");
        } catch (err) {
          setText("status", "error: " + err.message);
          document.body.setAttribute("data-ready", "1");
        }
      };
    } else {
      const rows = [];
      let view = [];
      const compute = () => {
        const q = state.filter.trim().toLowerCase();
        const id = /^\d+$/.test(q) ? Number(q) : null;
        view = q ? rows.filter((r) => r[0] === id || r[1].toLowerCase().includes(q)) : rows.slice();
        const k = state.sort, dir = state.desc ? -1 : 1;
        view.sort((a, b) => {
          const x = a[k], y = b[k];
          if (x === y) return a[0] - b[0];
          if (x === null || x === "") return 1;  // missing values last, either way
          if (y === null || y === "") return -1;
          return (x < y ? -1 : 1) * dir;
        });
      };
      const capped = m.capped ? ` · the first ${m.rows.toLocaleString()} of ${m.listed.toLocaleString()} ` +
                                "exported features (`autointerp serve` shows all)" : "";
      render = async () => {
        compute();
        const pages = Math.max(1, Math.ceil(view.length / PAGE));
        state.page = Math.min(state.page, pages - 1);
        show(view.slice(state.page * PAGE, (state.page + 1) * PAGE).map((r) => row(r)), view.length, capped);
      };
      for (let k = 0; k < m.shards; k++) {  // the first shard shows at once; the rest stream in
        await load(`data/index-${k}.js`);
        rows.push(...got.shards[k]);
        delete got.shards[k];
        setText("status", k + 1 < m.shards ? `loading: ${rows.length.toLocaleString()} of ${m.rows.toLocaleString()}` : "");
        if (k === 0 || k + 1 === m.shards || k % 5 === 0) await render();
      }
      if (!m.shards) await render();
    }
    const refresh = () => { state.search = ""; return render(); };

    let timer = null;
    document.getElementById("filter").addEventListener("input", (e) => {
      state.filter = e.target.value; state.page = 0;
      clearTimeout(timer);
      timer = setTimeout(refresh, served ? 150 : 0);
    });
    sortSel.addEventListener("change", () => { state.sort = Number(sortSel.value); state.page = 0; refresh(); });
    document.getElementById("order").addEventListener("click", () => { state.desc = !state.desc; refresh(); });
    document.getElementById("prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); render(); });
    document.getElementById("next").addEventListener("click", () => { state.page += 1; render(); });

    const box = document.getElementById("search");
    if (!served) box.closest("form").hidden = true;  // search needs the model: only when served
    box.closest("form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const q = box.value.trim();
      if (!q) return refresh();
      document.body.removeAttribute("data-ready");
      try {
        const res = await api("search", { q, limit: SEARCH_HITS });
        show(res.rows.map((h) => row(flat(h, null), el("span", { class: "muted", text: ` (similarity ${fmt(h.similarity)})` }))),
             res.rows.length, ` · nearest in meaning to “${q}”`);
        setText("page", `${res.rows.length} features nearest in meaning to “${q}”`);
      } catch (err) {
        setText("status", "error: " + err.message);
        document.body.setAttribute("data-ready", "1");
      }
    });
    traceBox(m);
    if (served) await render();
    await indexPlots();
  }

  // The trace box (served only): a text through the dictionary's model. The text is shown as a row of tokens
  // coloured by one feature's activation (the strongest at first; click a feature to colour by another),
  // each token's strongest features with their values on hover and in a list below. A dictionary without a
  // model here has no box.
  function traceBox(m) {
    const form = document.getElementById("tracebox");
    if (!served || m.tracer === "none") return;
    form.hidden = false;
    const input = document.getElementById("trace");
    const out = document.getElementById("traced");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const text = input.value;
      if (!text.trim()) { out.replaceChildren(); return; }
      document.body.removeAttribute("data-ready");
      const cold = m.tracer !== "ready";
      out.replaceChildren(el("p", { class: "muted", id: "tracing", text: cold ? "Tracing: the first trace loads the " +
                                    "model (several seconds)…" : "Tracing…" }));
      try {
        const res = await api("trace", { text, top: 3, matrix: "true" });
        m.tracer = "ready";
        out.replaceChildren(...traced(res));
      } catch (err) {
        out.replaceChildren(el("p", { class: "error", text: "trace: " + err.message }));
      }
      document.body.setAttribute("data-ready", "1");
    });
  }

  function traced(res) {
    const n = res.tokens.length;
    const values = new Map();  // feature -> its activation on every token (from the sparse matrix)
    const mx = res.matrix;
    if (mx) {
      mx.feature.forEach((f, j) => {
        if (!values.has(f)) values.set(f, new Float64Array(n));
        values.get(f)[mx.position[j]] = mx.value[j];
      });
    }
    const named = new Map();  // every feature in a token's top list, with its label and largest value
    res.top.forEach((feats) => feats.forEach((x) => {
      const was = named.get(x.feature);
      if (!was || x.value > was.max) named.set(x.feature, { label: x.label, max: x.value });
    }));
    const order = [...named.entries()].sort((a, b) => b[1].max - a[1].max).slice(0, 24);
    const valuesOf = (f) => values.get(f) || Float64Array.from(res.top.map((feats) =>
      (feats.find((x) => x.feature === f) || { value: 0 }).value));
    const strip = el("div", { id: "tracetext", class: "window tracetext" });
    const spans = res.tokens.map((tok, i) => {
      const span = el("span", { class: "tok", "data-i": String(i),
                                title: `${JSON.stringify(tok)}\n` + res.top[i].map((x) => `#${x.feature} ${fmt(x.value, 2)} ` +
                                       (x.label === null ? "(no label)" : x.label)).join("\n") });
      span.textContent = shown(tok);
      strip.append(span);
      return span;
    });
    const key = el("p", { id: "tracekey", class: "muted" });
    const chips = el("div", { id: "tracefeats" });
    function colour(f) {
      const v = valuesOf(f), top = Math.max(...v) || 1;
      spans.forEach((sp, i) => {
        const a = Math.max(0, Math.min(1, v[i] / top));
        sp.style.backgroundColor = a > 0 ? `rgba(255, 140, 0, ${(0.12 + 0.88 * a).toFixed(3)})` : "";
        sp.setAttribute("data-value", String(+v[i].toFixed(4)));
      });
      strip.setAttribute("data-feature", String(f));
      const info = named.get(f);
      key.textContent = `Coloured by #${f} ${info && info.label !== null ? info.label : "(no label)"} (max ${fmt(top, 2)} ` +
                        "on this text); click a feature to colour by it.";
      for (const b of chips.children) b.classList.toggle("on", b.getAttribute("data-feature") === String(f));
    }
    for (const [f, info] of order) {
      const b = el("button", { type: "button", class: "tfeat", "data-feature": String(f),
                               text: `#${f} ${fmt(info.max, 2)} ${info.label === null ? "(no label)" : info.label}` });
      b.addEventListener("click", () => colour(f));
      chips.append(b);
    }
    const rows = res.tokens.map((tok, i) => {
      const feats = el("span", { class: "feats" });
      for (const x of res.top[i]) {
        feats.append(el("a", { href: "feature.html" + location.search + "#" + x.feature, "data-value": String(x.value),
                               title: `activation ${fmt(x.value, 2)}` },
                        el("b", { class: "val", text: `#${x.feature} ${fmt(x.value, 2)}` }),
                        " " + (x.label === null ? "(no label)" : x.label)));
      }
      return el("div", { class: "tokrow" }, el("span", { class: "tok", text: shown(tok) }), feats);
    });
    if (order.length) colour(order[0][0]);
    return [el("h2", { text: `Traced: ${n} tokens` }), key, strip, chips,
            el("h3", { text: "Each token's strongest features" }), el("div", { id: "tracerows" }, ...rows)];
  }

  // -- a feature ---------------------------------------------------------------------------------------

  function windowRow(tokens, values, scale, label) {
    const div = el("div", { class: "window" });
    if (label) div.append(el("span", { class: "meta", text: label }));
    tokens.forEach((tok, i) => {
      const v = values[i] || 0;
      const a = scale > 0 ? Math.max(0, Math.min(1, v / scale)) : 0;
      const span = el("span", { class: "tok", title: `${JSON.stringify(tok)}: ${fmt(v)}`, text: shown(tok) });
      if (a > 0) span.style.backgroundColor = `rgba(255, 140, 0, ${(0.12 + 0.88 * a).toFixed(3)})`;
      div.append(span);
    });
    return div;
  }

  const LOW = 0.2;  // a grade below this says why, as an undefined one does

  // a grade's windows by kind, as the feature page says why a grade is what it is: "top 10 (r 0.81) · ..."
  const byKind = (bk) => Object.entries(bk || {}).map(([kind, x]) =>
    `${kind} ${x.n}` + (x.mean_r === null ? " (r –)" : ` (r ${fmt(x.mean_r, 2)})`)).join(" · ");

  // a grade's cell: value ± half its interval, and below it why it is what it is; `theirs`: the grade an
  // import brought for the same scorer, when ours replaced it
  function gradeTd(sc, theirs) {
    const td = gradeCell(sc);
    if (theirs && theirs.status === "ok") {
      td.append(el("small", { class: "why imported", text: `imported from ${theirs.imported}: ${fmt(theirs.value)}` +
                                                          (theirs.ci ? "" : " (no interval)") }));
    }
    return td;
  }

  function gradeCell(sc) {
    if (!sc) return el("td", { class: "num", text: "" });
    if (sc.imported) {  // a grade that came with an imported label: its source's, as it was given
      return el("td", { class: "num imported", title: sc.version || "" }, sc.status === "ok" ? fmt(sc.value) : sc.status,
                el("small", { class: "why", text: `imported from ${sc.imported}` + (sc.ci ? "" : ": no interval") +
                                                  (sc.reason ? `; ${sc.reason}` : "") }));
    }
    const pm = sc.ci ? " ± " + fmt((sc.ci[1] - sc.ci[0]) / 2, 2) : "";
    const title = [sc.version, sc.reason, sc.ci ? `95% interval ${fmt(sc.ci[0])} to ${fmt(sc.ci[1])} on ${sc.n_windows} windows` : ""];
    if (sc.status !== "ok") {  // undefined or failed: the reason, shown
      return el("td", { class: "num ungraded", title: title.filter(Boolean).join(" — ") },
                sc.status, el("small", { class: "why", text: sc.reason || "no reason recorded" }));
    }
    const low = sc.value < LOW;
    const td = el("td", { class: "num" + (low ? " low" : ""), title: title.filter(Boolean).join(" — ") }, fmt(sc.value) + pm);
    const kinds = byKind(sc.by_kind);
    if (kinds || low) {
      td.append(el("small", { class: "why", text: (low ? "low: " : "") + `${sc.n_windows} windows` +
                                                    (kinds ? ": " + kinds : "") }));
    }
    return td;
  }

  function labels(main, doc) {
    main.append(el("h2", { text: "Labels" }));
    if (!doc.labels.length) { main.append(el("p", { class: "muted", text: "No label yet." })); return; }
    const scorers = [...new Set(doc.labels.flatMap((l) => [...Object.keys(l.scores),
                                                            ...Object.keys(l.imported_scores || {})]))].sort();
    const table = el("table", { id: "labels" });
    table.append(el("tr", {}, el("th", { text: "label" }), ...scorers.map((s) => el("th", { class: "num", text: s })),
                    el("th", { text: "provenance" })));
    for (const l of doc.labels) {
      const tr = el("tr", { class: l.chosen ? "chosen" : "candidate" });
      tr.append(el("td", { class: l.chosen ? "label" : "candidate", text: l.explanation + (l.chosen ? "" : " (candidate)") }));
      for (const s of scorers) tr.append(gradeTd(l.scores[s], (l.imported_scores || {})[s]));
      tr.append(el("td", { class: "prov", text: `${l.explainer} · prompt ${l.prompt_hash} · sampler ${l.sampler_hash} · ` +
                                                 `seed ${l.seed} · ${l.created_at.replace("T", " ").slice(0, 19)}` +
                                                 (l.run_id ? ` · run ${l.run_id}` : "") +
                                                 (l.imported ? ` · imported from ${l.imported}` : "") +
                                                 (l.carried ? ` · carried from ${l.carried}` : "") }));
      table.append(tr);
    }
    main.append(table);
    const dl = el("dl", { id: "measures", class: "measures" });
    measures(dl, scorers, (got.meta && got.meta.measures) || {});
    if (dl.childElementCount) main.append(dl);
  }

  // the feature's plots: every firing by activation (its quantile windows' peaks marked), and its density
  // among the dictionary's features; the first drawn at once, the second when the dictionary's overview
  // arrives (the rest of the page does not wait for it)
  async function featurePlots(main, doc) {
    const h = doc.histogram, s = doc.stats;
    const box = el("section", { id: "plots", class: "plots" });
    main.append(el("h2", { text: "Activations and density" }), box);
    if (h && h.hi > 0) {
      const peaks = (doc.quantile || []).map((w) => Math.max(...w.acts));
      box.append(figure("Activations: every firing", PLOT.histogram({
        id: "act-hist", counts: h.counts, lo: 0, hi: h.hi, ylog: true, title: "Activations: every firing",
        xlabel: "activation", ylabel: "firings (log scale)",
        binText: (i, a, b, n) => `activation ${fmt(a, 2)} to ${fmt(b, 2)}: ${n.toLocaleString()} firings`,
        marks: peaks.map((v, i) => ({ x: v, kind: "quantile", text: `quantile window ${i + 1}: peak ${fmt(v, 2)}` })),
      }), `${s.n_firing.toLocaleString()} firings up to ${fmt(h.hi, 2)}; the dashed lines mark the peaks of the ` +
          `${peaks.length} quantile windows below.`));
    }
    let o = null;
    try { o = await overview(); } catch (err) { o = null; }
    if (o && o.density.live && s.density > 0) {
      const d = o.density, x = log10(s.density);
      const n = d.counts.length, at = Math.min(n - 1, Math.max(0, Math.floor((x - d.lo) / (d.hi - d.lo) * n)));
      const below = d.counts.slice(0, at).reduce((a, b) => a + b, 0) + d.counts[at] / 2;
      const pct = Math.round(100 * below / d.live);
      box.append(figure("Density against the dictionary's", PLOT.histogram({
        id: "density-hist", counts: d.counts, lo: d.lo, hi: d.hi, fx: decade, ylog: true,
        title: "Density against the dictionary's", xlabel: "density (log scale)", ylabel: "features",
        binText: (i, a, b, c) => `density ${decade(a)} to ${decade(b)}: ${c.toLocaleString()} features`,
        marks: [{ x, kind: "this", label: "this feature", text: `this feature: density ${fmt(s.density, 6)}` }],
      }), `Fires on ${fmt(100 * s.density, 3)}% of tokens: denser than about ${pct}% of the ` +
          `${d.live.toLocaleString()} features that fire.`));
    }
  }

  function outputs(main, out) {  // the logit lens of the feature's output direction
    main.append(el("h2", { text: "Output: tokens it promotes and suppresses" }));
    const box = el("section", { id: "outputs" });
    for (const [side, name, rgb] of [["promoted", "promotes", "0, 140, 60"], ["suppressed", "suppresses", "200, 30, 30"]]) {
      const row = el("div", { class: "window", "data-side": side });
      row.append(el("span", { class: "row-label", text: name }));
      const toks = out[side] || [];
      const peak = Math.max(...toks.map((t) => Math.abs(t.logit))) || 1;
      for (const t of toks) {
        const span = el("span", { class: "tok", title: `${JSON.stringify(t.token)}: logit ${fmt(t.logit)}`, text: shown(t.token) });
        span.style.backgroundColor = `rgba(${rgb}, ${(0.15 + 0.5 * Math.abs(t.logit) / peak).toFixed(3)})`;
        row.append(span, " ");
      }
      box.append(row);
    }
    main.append(box);
  }

  function windows(main, title, id, wins, scale) {
    if (!wins.length) return;
    main.append(el("h2", { text: title }));
    const box = el("section", { id });
    for (const w of wins) box.append(windowRow(w.tokens, w.acts, scale, fmt(Math.max(...w.acts), 2)));
    main.append(box);
  }

  function simulation(main, sim, scale) {
    main.append(el("h2", { text: "Simulated vs true activations" }));
    main.append(el("p", { class: "muted", text: `Simulating “${sim.explanation}” on the held-out windows it was ` +
                                                  `graded on (pooled correlation ${fmt(sim.value)}).` }));
    const box = el("section", { id: "simulation" });
    // predictions are on the simulator's own scale (0..10 for an LLM): shade them by their own maximum
    const pmax = Math.max(...sim.windows.flatMap((w) => w.predicted)) || 1;
    for (const w of sim.windows) {
      const pair = el("div", { class: "pair" });
      pair.append(el("div", { class: "muted", text: `${w.kind} window · r = ${fmt(w.r, 2)}` }));
      const t = windowRow(w.tokens, w.acts, scale); t.prepend(el("span", { class: "row-label", text: "true" }));
      const p = windowRow(w.tokens, w.predicted, pmax); p.prepend(el("span", { class: "row-label", text: "simulated" }));
      pair.append(t, p);
      box.append(pair);
    }
    main.append(box);
  }

  async function featureDoc(f) {
    if (served) {
      try { return await api(`features/${f}`); } catch (err) { if (err.status === 404) return null; throw err; }
    }
    const k = Math.floor(f / got.meta.feature_shard);
    if (!got.features[k]) {
      try { await load(`data/f/${k}.js`); } catch (err) { got.features[k] = {}; }
    }
    return got.features[k][String(f)] || null;
  }

  async function showFeature() {
    const f = Number((location.hash || "#0").slice(1)) || 0;
    const main = document.getElementById("main");
    main.replaceChildren();
    document.body.removeAttribute("data-ready");
    setText("title", `Feature ${f}`);
    const nav = document.getElementById("nav");
    const here = "feature.html" + location.search + "#";
    nav.replaceChildren(el("a", { href: here + Math.max(0, f - 1), text: "previous" }), " · ",
                        el("a", { href: here + (f + 1), text: "next" }));
    const doc = await featureDoc(f);
    if (!doc || (doc.sample && doc.sample.status !== "ok" && !doc.labels.length)) {
      main.append(el("p", { class: "muted", text: doc && doc.sample ? `No windows for this feature: ${doc.sample.reason}.` :
        "No windows for this feature (dead, too rare, not exported, or out of range)." }));
      document.body.setAttribute("data-ready", "1");
      return;
    }
    const s = doc.stats;
    setText("subtitle", `${got.meta.dictionary || got.meta.name} · fires on ${s.n_firing.toLocaleString()} tokens in ` +
                        `${s.n_contexts.toLocaleString()} contexts · density ${fmt(s.density, 5)} · max ${fmt(s.max, 2)}`);
    document.title = `${f}: ${doc.labels.length ? doc.labels[0].explanation : "feature"} — autointerp`;
    labels(main, doc);
    const plotted = featurePlots(main, doc);
    if (doc.outputs) outputs(main, doc.outputs);
    windows(main, "Top activations", "top", doc.top || [], s.max);
    windows(main, "Across quantiles", "quantile", doc.quantile || [], s.max);
    if (doc.simulation) simulation(main, doc.simulation, s.max);
    await plotted;  // the density plot, once the dictionary's overview is in
    document.body.setAttribute("data-ready", "1");
  }

  async function featurePage() {
    await meta();
    window.addEventListener("hashchange", showFeature);
    await showFeature();
  }

  return {
    meta: (m) => { got.meta = m; },
    shard: (k, rows) => { got.shards[k] = rows; },
    features: (k, docs) => { got.features[k] = docs; },
    overview: (doc) => { got.overview = doc; },
    indexPage, featurePage,
  };
})();
