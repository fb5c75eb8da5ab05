"""The feature browser: a static site (`export --format html`) and the same pages served live (`serve`).

The pages (`web/index.html`, `web/feature.html`, `web/app.js`, `web/app.css`) are fixed files. Served
by `autointerp serve`, they read the JSON API (`api.py`): the server sorts, filters and pages. Opened
from disk (file://, where a page may load a script but not fetch a file), they read data scripts
that call `AI.meta(...)`, `AI.shard(k, rows)` and `AI.features(k, docs)`, written once by the export:

- `data/meta.js`: the dictionary, its scorers, how many index rows and feature shards there are;
- `data/index-K.js`: the index rows, 2,000 a script, [feature, label, density, max, n_firing, one
  value per scorer]: the labelled features (every feature with `all_features`), at most INDEX_CAP
  rows (100,000: what a page can sort and filter in memory; beyond that the index says it is capped
  and `serve` shows everything);
- `data/f/K.js`: the page data of features K*1024 .. K*1024+1023 that are exported (the labelled ones,
  or those asked for), so 1M features are ~1,000 files, never one per feature.

Every value reaches the page as JSON (ASCII, no NaN) and is put in the page with textContent or
setAttribute, never as HTML.

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

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from ..errors import ExportError
from ..records import Dictionary, SamplerConfig
from ..sample import Sampler
from ..store import Store
from .lock import one_export_at_a_time

WEB = Path(__file__).with_name("web")
ASSETS = ("index.html", "feature.html", "app.js", "app.css", "calibration.html", "calibration.js")
SHARD = 2000  # rows per index script
FEATURE_SHARD = 1024  # features per page-data script (as Neuronpedia batches)
INDEX_CAP = 100_000  # index rows a static page holds (it sorts and filters them in memory)
MAX_TOP, MAX_QUANTILE, MAX_SIM_ACTIVE, MAX_SIM_QUIET = 10, 20, 20, 5


def calibration_doc(store: Store) -> dict:
    """Every calibration run of the store with its summaries and per-rule table (the calibration page's data;
    `export --format calibration` writes it as JSON)."""
    from ..calibrate.metrics import by_rule

    return {"runs": [{**r, "rules": by_rule(store.calibrations.grades(r["run_id"]))}
                     for r in store.calibrations.runs()]}


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
    return {"dictionary": d.name, "model": d.model, "hook": d.hook, "kind": d.kind, "width": d.width,
            "scorers": store.labels.scorer_names(d.dictionary_id), "labelled": store.labels.labelled_count(d.dictionary_id)}


def index_table(store: Store, d: Dictionary, scorers: list[str], features=None, all_features: bool = False):
    """The rows of the static index (Arrow): labelled features (or every feature), optionally only `features`."""
    t = store.labels.feature_table(d.dictionary_id, scorers)
    if not all_features:
        t = t.filter(pa.compute.is_valid(t.column("explanation_id")))
    if features is not None:
        t = t.filter(pa.compute.is_in(t.column("feature"), pa.array(np.asarray(features, np.uint32))))
    return t


def index_rows(t, lo: int, hi: int, scorers: list[str]) -> list[list]:
    """Index rows lo..hi of an `index_table`: [feature, label, density, max, n_firing, one value per scorer,
    then the half-width of each value's 95% interval (null when it has none)]."""
    part = t.slice(lo, hi - lo).to_pydict()
    cols = [part[f"s{i}"] for i in range(len(scorers))]
    halves = [[None if a is None or b is None else (b - a) / 2 for a, b in zip(part[f"l{i}"], part[f"u{i}"])]
              for i in range(len(scorers))]
    return [[f, lab, _r(dens, 6), _r(mx), int(n), *[_r(c[i]) for c in cols], *[_r(h[i]) for h in halves]]
            for i, (f, lab, dens, mx, n) in enumerate(zip(part["feature"], part["label"], part["density"],
                                                          part["max"], part["n_firing"]))]


def _window(w, predicted=None, r=None) -> dict:
    doc = {"kind": w.kind, "context": w.context_id, "start": w.start, "tokens": list(w.tokens),
           "acts": [_r(a) for a in w.activations.tolist()]}
    if predicted is not None:
        doc["predicted"] = [_r(p, 1) for p in predicted]  # 0..10
        doc["r"] = r
    return doc


def _label_doc(r: dict) -> dict:
    scores = {n: {k: v for k, v in s.items() if k != "details"} | {"details": {
        k: v for k, v in s["details"].items() if k not in ("predicted", "per_window_correlation", "kinds")}}
        for n, s in r["scores"].items()}
    return {k: r[k] for k in ("explanation", "chosen", "explainer", "prompt_hash", "sampler_hash", "seed",
                              "created_at", "evidence", "imported", "carried")} | {"scores": scores}


def feature_docs(store: Store, d: Dictionary, features: list[int], unsampled: bool = False) -> Iterator[tuple[int, dict]]:
    """(feature, page data) for each feature that has windows (with `unsampled`, every feature: one
    without windows says why in `sample`); its label rows and windows read in batches."""
    by_f: dict[int, list] = {}
    for r in store.labels.find(d.dictionary_id, features, candidates=True):
        by_f.setdefault(r["feature_id"], []).append(r)
    stats = {s.feature: s for s in store.activations.feature_stats(d.dictionary_id, features)}
    outputs = store.activations.output_tokens(d.dictionary_id, features)
    groups: dict[tuple[str, int], list[int]] = {}
    for f in features:  # windows drawn as the feature's label drew them (default config when unlabelled)
        lab = _primary(by_f.get(f, []))
        key = (json.dumps(lab["sampler"], sort_keys=True), lab["seed"]) if lab else ("{}", 0)
        groups.setdefault(key, []).append(f)
    for (cfg, seed), fs in groups.items():
        for smp in Sampler(store, d, SamplerConfig(**json.loads(cfg)), seed).sample_many(fs):
            if smp.status != "ok" and not unsampled:
                continue
            rows = sorted(by_f.get(smp.feature, []), key=lambda r: (not r["chosen"], r["created_at"]))
            st = stats[smp.feature]
            doc = {"feature": smp.feature, "stats": {"density": _r(st.density, 6), "max": _r(st.max_value),
                                                      "mean": _r(st.mean_value), "n_firing": int(st.n_firing),
                                                      "n_contexts": int(st.n_contexts)},
                   "sample": {"status": smp.status, "reason": smp.reason},
                   "labels": [_label_doc(r) for r in rows],
                   "top": [_window(w) for w in smp.explain if w.kind == "top"][:MAX_TOP],
                   "quantile": [_window(w) for w in smp.explain if w.kind == "quantile"][:MAX_QUANTILE]}
            if smp.feature in outputs:
                doc["outputs"] = outputs[smp.feature].to_json()
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


def swap_in(tmp: Path, out: Path) -> None:
    """Put the finished folder `tmp` at `out`. The earlier one is moved aside first and removed after, so
    `out` is always a whole export or absent; a kill in between leaves `.OUT.autointerp-old`, which the
    next export removes."""
    old = out.with_name(f".{out.name}.autointerp-old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


DIFF_ASSETS = ("diff.html", "diff.js", "app.css")


def check_diff_out(out: str | Path) -> Path:
    """A folder a diff page may be written to: new, or an earlier diff page (ExportError otherwise)."""
    out = Path(out)
    if out.exists() and not (out / "diff-data.js").exists():
        raise ExportError(f"--html {out} exists and is not an autointerp diff page: not replacing it")
    if not out.parent.is_dir():
        raise ExportError(f"--html {out}: folder {out.parent} does not exist")
    return out


def write_diff_html(doc: dict, out: str | Path) -> dict:
    """The page of a diff (match/diff.py's result as a dict) in the folder `out` (replaced if it holds an
    earlier diff page): open OUT/diff.html."""
    out = check_diff_out(out)
    tmp = out.with_name(f".{out.name}.autointerp-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for name in DIFF_ASSETS:
            shutil.copyfile(WEB / name, tmp / name)
        (tmp / "diff-data.js").write_text(
            f"DIFF.show({json.dumps(doc, ensure_ascii=True, allow_nan=False)});\n", encoding="ascii")
        swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": str(out), "page": str(out / "diff.html")}


@one_export_at_a_time
def write_html(store: Store, out: str | Path, dictionary: str | None = None, features=None,
               all_features: bool = False, progress=None) -> dict:
    """Write the browser of one dictionary to the folder `out` (replaced if it holds an earlier export):
    the labelled features, or `features` (ids) of them, or with `all_features` every feature that fires."""
    out = Path(out)
    d = store.dictionary(dictionary)
    if out.exists() and not (out / "data" / "meta.js").exists():
        raise ExportError(f"{out} exists and is not an autointerp browser: not replacing it")
    tmp = out.with_name(f".{out.name}.autointerp-tmp")  # ours alone: one left by a killed export is removed here
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "data" / "f").mkdir(parents=True)
        for name in ASSETS:
            shutil.copyfile(WEB / name, tmp / name)
        meta = site_meta(store, d)
        t = index_table(store, d, meta["scorers"], features, all_features)
        listed = t.num_rows
        rows = min(listed, INDEX_CAP)
        meta |= {"shard": SHARD, "shards": -(-rows // SHARD), "rows": rows, "listed": listed,
                 "capped": listed > INDEX_CAP, "feature_shard": FEATURE_SHARD}
        for k in range(meta["shards"]):
            (tmp / "data" / f"index-{k}.js").write_text(
                js("shard", k, index_rows(t, k * SHARD, min((k + 1) * SHARD, rows), meta["scorers"])), encoding="ascii")
        feats = t.column("feature").to_numpy().astype(np.int64)
        feats = feats[np.asarray(t.column("n_firing").to_numpy()) > 0]
        pages = files = 0
        for k in np.unique(feats // FEATURE_SHARD).tolist():
            docs: dict[int, dict] = {}
            part = feats[(feats >= k * FEATURE_SHARD) & (feats < (k + 1) * FEATURE_SHARD)]
            for lo in range(0, len(part), 256):
                docs.update(feature_docs(store, d, part[lo:lo + 256].tolist()))
            if docs:
                (tmp / "data" / "f" / f"{k}.js").write_text(js("features", k, {str(f): v for f, v in docs.items()}),
                                                            encoding="ascii")
                pages, files = pages + len(docs), files + 1
            if progress is not None:
                progress.update(len(part))
        meta["pages"] = pages
        (tmp / "data" / "meta.js").write_text(js("meta", meta), encoding="ascii")
        (tmp / "data" / "calibration.js").write_text(
            "CAL.show(" + json.dumps(calibration_doc(store), ensure_ascii=True, allow_nan=False) + ");\n",
            encoding="ascii")
        swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": str(out), "dictionary": d.name, "features": d.width, "listed": listed, "index_rows": rows,
            "capped": listed > INDEX_CAP, "pages": pages, "shards": meta["shards"], "feature_files": files,
            "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file())}
