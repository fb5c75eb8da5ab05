"""The feature browser: a static site (`export --format html`) and the same pages served live (`serve`).

The pages (`web/index.html`, `web/feature.html`, `web/app.js`, `web/app.css`) are fixed files; what
they show comes from data scripts that call `AI.meta(...)`, `AI.shard(k, rows)` and `AI.feature(f,
doc)`. Scripts, not JSON: a page opened from disk (file://) may load a script but may not fetch a file.
The static export writes those scripts once (`data/meta.js`, `data/index-K.js` with 2,000 features
each, `data/f/F.js` per feature); `autointerp serve` makes the same scripts per request from the store,
so both run one code path. The index loads its first shard and shows it at once, then the others, so
16k+ features open fast; it pages 100 rows at a time. Every value reaches the page as JSON (ASCII, no
NaN) and is put in the page with textContent or setAttribute, never as HTML.

A feature page shows its labels (every best-of-k candidate, chosen first) with grades and provenance,
its top and quantile windows with each token shaded by its activation (hover shows the value), and, for
a label graded by simulation, simulated vs true activations on the held-out windows it was graded on
(re-drawn with the label's sampler config and seed, so they are the same windows).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import ExportError
from ..records import Dictionary, SamplerConfig
from ..sample import Sampler
from ..store import Store

WEB = Path(__file__).with_name("web")
ASSETS = ("index.html", "feature.html", "app.js", "app.css")
SHARD = 2000  # features per index script
MAX_TOP, MAX_QUANTILE, MAX_SIM_ACTIVE, MAX_SIM_QUIET = 10, 20, 20, 5


def js(call: str, *args) -> str:
    """One data script: a call of the page's loader with JSON arguments (ASCII only, never NaN)."""
    return f"AI.{call}({', '.join(json.dumps(a, ensure_ascii=True, allow_nan=False) for a in args)});\n"


def _r(x: float | None, digits: int = 3) -> float | int | None:
    """Rounded for the page; an exact zero (most tokens) as 0, which is shorter."""
    return None if x is None else (round(float(x), digits) or 0)


def _primary(rows: list[dict]) -> dict | None:
    """A feature's label for the index: the newest chosen one."""
    chosen = [r for r in rows if r["chosen"]]
    return max(chosen, key=lambda r: r["created_at"]) if chosen else None


def site_meta(store: Store, d: Dictionary) -> dict:
    scorers = [r[0] for r in store.con.execute(
        "SELECT DISTINCT s.scorer FROM scores s JOIN explanations e USING (explanation_id) "
        "WHERE e.dictionary_id = ? ORDER BY 1", [d.dictionary_id]).fetchall()]
    return {"dictionary": d.name, "model": d.model, "hook": d.hook, "kind": d.kind, "width": d.width,
            "shard": SHARD, "shards": -(-d.width // SHARD), "scorers": scorers,
            "labelled": store.labelled_count(d.dictionary_id)}


def index_rows(store: Store, d: Dictionary, k: int, scorers: list[str]) -> list[list]:
    """Rows of index shard k: [feature, label, density, max, n_firing, one value per scorer]."""
    lo, hi = k * SHARD, min((k + 1) * SHARD, d.width)
    stats = {s.feature: s for s in store.feature_stats(d.dictionary_id, list(range(lo, hi)))}
    by_f: dict[int, list] = {}
    for r in store.labels(d.dictionary_id, range(lo, hi)):
        by_f.setdefault(r["feature_id"], []).append(r)
    out = []
    for f in range(lo, hi):
        s, lab = stats.get(f), _primary(by_f.get(f, []))
        sc = lab["scores"] if lab else {}
        out.append([f, lab["explanation"] if lab else "", _r(s.density, 6) if s else 0.0,
                    _r(s.max_value) if s else None, int(s.n_firing) if s else 0,
                    *[_r(sc[n]["value"]) if n in sc else None for n in scorers]])
    return out


def _window(w, predicted=None, r=None) -> dict:
    doc = {"kind": w.kind, "context": w.context_id, "start": w.start, "tokens": list(w.tokens),
           "acts": [_r(a) for a in w.activations]}
    if predicted is not None:
        doc["predicted"] = [_r(p, 1) for p in predicted]  # 0..10
        doc["r"] = r
    return doc


def _label_doc(r: dict) -> dict:
    scores = {n: {k: v for k, v in s.items() if k != "details"} | {"details": {
        k: v for k, v in s["details"].items() if k not in ("predicted", "per_window_correlation", "kinds")}}
        for n, s in r["scores"].items()}
    return {k: r[k] for k in ("explanation", "chosen", "explainer", "prompt_hash", "sampler_hash", "seed",
                              "created_at", "evidence")} | {"scores": scores}


def feature_docs(store: Store, d: Dictionary, features: list[int]) -> Iterator[tuple[int, dict]]:
    """(feature, page data) for each feature that has windows; its label rows and windows read in batches."""
    by_f: dict[int, list] = {}
    for r in store.labels(d.dictionary_id, features, candidates=True):
        by_f.setdefault(r["feature_id"], []).append(r)
    stats = {s.feature: s for s in store.feature_stats(d.dictionary_id, features)}
    groups: dict[tuple[str, int], list[int]] = {}
    for f in features:  # windows drawn as the feature's label drew them (default config when unlabelled)
        lab = _primary(by_f.get(f, []))
        key = (json.dumps(lab["sampler"], sort_keys=True), lab["seed"]) if lab else ("{}", 0)
        groups.setdefault(key, []).append(f)
    for (cfg, seed), fs in groups.items():
        for smp in Sampler(store, d, SamplerConfig(**json.loads(cfg)), seed).sample_many(fs):
            if smp.status != "ok":
                continue
            rows = sorted(by_f.get(smp.feature, []), key=lambda r: (not r["chosen"], r["created_at"]))
            st = stats[smp.feature]
            doc = {"feature": smp.feature, "stats": {"density": _r(st.density, 6), "max": _r(st.max_value),
                                                      "mean": _r(st.mean_value), "n_firing": int(st.n_firing),
                                                      "n_contexts": int(st.n_contexts)},
                   "labels": [_label_doc(r) for r in rows],
                   "top": [_window(w) for w in smp.explain if w.kind == "top"][:MAX_TOP],
                   "quantile": [_window(w) for w in smp.explain if w.kind == "quantile"][:MAX_QUANTILE]}
            sim = next((r for r in rows if r["chosen"] and r["seed"] == seed  # graded on these very windows
                        and json.dumps(r["sampler"], sort_keys=True) == cfg
                        and r["scores"].get("simulation", {}).get("details", {}).get("predicted")), None)
            det = sim["scores"]["simulation"]["details"] if sim is not None else {}
            shown = det.get("predicted_windows", list(range(len(det.get("predicted", [])))))  # older: every window
            if sim is not None and len(shown) == len(det["predicted"]) and all(i < len(smp.score) for i in shown):
                wins = [_window(smp.score[i], p, det["per_window_correlation"][i]) for i, p in zip(shown, det["predicted"])]
                active = [w for w in wins if w["kind"] not in ("random", "neighbor")]
                quiet = [w for w in wins if w["kind"] in ("random", "neighbor")]
                doc["simulation"] = {"explanation": sim["explanation"], "value": sim["scores"]["simulation"]["value"],
                                     "windows": active[:MAX_SIM_ACTIVE] + quiet[:MAX_SIM_QUIET]}
            yield smp.feature, doc


def write_html(store: Store, out: str | Path, dictionary: str | None = None) -> dict:
    """Write the browser of one dictionary to the folder `out` (replaced if it holds an earlier export)."""
    out = Path(out)
    d = store.dictionary(dictionary)
    tmp = out.with_name(f".{out.name}.autointerp-tmp")  # ours alone: removed if a run was cut short
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "data" / "f").mkdir(parents=True)
        for name in ASSETS:
            shutil.copyfile(WEB / name, tmp / name)
        meta = site_meta(store, d)
        (tmp / "data" / "meta.js").write_text(js("meta", meta), encoding="ascii")
        pages = 0
        for k in range(meta["shards"]):
            rows = index_rows(store, d, k, meta["scorers"])
            (tmp / "data" / f"index-{k}.js").write_text(js("shard", k, rows), encoding="ascii")
            for f, doc in feature_docs(store, d, [r[0] for r in rows if r[4] > 0]):
                (tmp / "data" / "f" / f"{f}.js").write_text(js("feature", f, doc), encoding="ascii")
                pages += 1
        if out.exists():
            if not (out / "data" / "meta.js").exists():
                raise ExportError(f"{out} exists and is not an autointerp browser: not replacing it")
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": str(out), "dictionary": d.name, "features": d.width, "pages": pages, "shards": meta["shards"]}
