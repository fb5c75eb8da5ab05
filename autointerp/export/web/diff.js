// The page of `autointerp diff --html DIR`: what changed between two runs or two dictionaries, most
// impactful first. Its data is diff-data.js, a script calling DIFF.show({...}) (a page opened from disk may
// load a script but not fetch a file). Every string goes into the page through textContent, never HTML.
"use strict";

const DIFF = (() => {
  const fmt = (v, d = 3) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
  const KINDS = { added: "added", gone: "gone", relabelled: "relabelled", grade: "grade moved" };

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function grade(v, ci) { return fmt(v) + (ci ? ` [${fmt(ci[0])}, ${fmt(ci[1])}]` : ""); }

  function cells(r) {
    const feature = r.feature_a !== undefined && r.feature_b !== undefined && r.feature_a !== r.feature_b
      ? `${r.feature_a} → ${r.feature_b}` : String(r.feature_b !== undefined ? r.feature_b : r.feature_a);
    if (r.kind === "grade") {
      return [`${KINDS.grade}: ${r.scorer} ${r.delta > 0 ? "+" : ""}${fmt(r.delta)}`, feature,
              grade(r.value_a, r.ci_a), grade(r.value_b, r.ci_b) + " — " + (r.label_b || "")];
    }
    if (r.kind === "relabelled") {
      return [`${KINDS.relabelled} (distance ${fmt(r.distance, 2)})`, feature, r.label_a, r.label_b];
    }
    return [KINDS[r.kind], feature, r.label_a || "", r.label_b || ""];
  }

  function show(doc) {
    document.getElementById("subtitle").textContent =
      `${doc.a} → ${doc.b}; features paired by ${doc.paired_by}`;
    const c = doc.counts;
    const counts = document.getElementById("counts");
    counts.append(el("p", `${c.added} added, ${c.gone} gone, ${c.relabelled} relabelled (${c.changed_meaning} ` +
                           `changed meaning), ${c.grade} grades moved beyond their intervals; ${c.pairs} labelled ` +
                           `pairs compared (${c.labelled_a} labels before, ${c.labelled_b} after)`));
    for (const [scorer, m] of Object.entries(doc.grades_moved || {})) {
      counts.append(el("p", `${scorer}: ${m.up} up, ${m.down} down`, "muted"));
    }
    const sel = document.getElementById("kind");
    for (const k of Object.keys(KINDS)) {
      const o = el("option", KINDS[k]);
      o.value = k;
      sel.append(o);
    }
    const render = () => {
      const body = document.getElementById("rows");
      body.replaceChildren();
      const rows = doc.rows.filter((r) => !sel.value || r.kind === sel.value);
      for (const r of rows) {
        const tr = el("tr");
        tr.className = "change-" + r.kind;
        tr.append(el("td", fmt(r.impact), "num"));
        const [what, feature, before, after] = cells(r);
        tr.append(el("td", what), el("td", feature, "num"), el("td", before), el("td", after),
                  el("td", r.n_firing, "num"));
        body.append(tr);
      }
      document.getElementById("status").textContent =
        `${rows.length} of the ${doc.rows.length} most impactful changes shown`;
      document.body.dataset.ready = "1";
    };
    sel.addEventListener("change", render);
    render();
  }

  return { show };
})();
