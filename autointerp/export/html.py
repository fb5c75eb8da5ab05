"""The feature browser: a static site (`export --format html`) and the same pages served live (`serve`).

The pages (`web/index.html`, `web/feature.html`, `web/app.js`, `web/app.css`) are fixed files. Served
by `autointerp serve`, they read the JSON API (`api.py`): the server sorts, filters and pages. Opened
from disk (file://, where a page may load a script but not fetch a file), they read data scripts
that call `AI.meta(...)`, `AI.shard(k, rows)` and `AI.features(k, docs)`, written once by the export:

- `data/meta.js`: the dictionary, its scorers, how many index rows and feature shards there are;
- `data/index-K.js`: the index rows, 2,000 a script (`index_rows`: a feature, its label, statistics and
  grades): the labelled features (every feature with `all_features`), at most INDEX_CAP rows (100,000:
  what a page can sort and filter in memory; beyond that the index says it is capped and `serve` shows
  everything);
- `data/f/K.js`: the page data of features K*S .. K*S+S-1 that are exported (the labelled ones, or those
  asked for), S a power of two chosen from the measured size of a feature's data so a script holds ~600 KB
  at most (a feature page loads one script), 1,024 at most: never a file per feature;
- `data/overview.js`: the index's plots (the dictionary's density histogram, grade vs density).

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
ASSETS = ("index.html", "feature.html", "app.js", "plots.js", "app.css", "calibration.html", "calibration.js")
SHARD = 2000  # rows per index script
FEATURE_SHARD = 1024  # features per page-data script at most (as Neuronpedia batches)
FILE_BYTES = 600_000  # what one page-data script should hold at most: a feature page loads one
SIZE_SAMPLE = 64  # features whose page data is measured to choose the features per script
SCATTER_POINTS = 2000  # features in the index's scatter of grade vs density at most
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
    from ..score import MEASURES

    scorers = store.labels.scorer_names(d.dictionary_id)
    return {"dictionary": d.name, "model": d.model, "hook": d.hook, "kind": d.kind, "width": d.width,
            "scorers": scorers, "measures": {n: MEASURES[n] for n in scorers if n in MEASURES},
            "labelled": store.labels.labelled_count(d.dictionary_id)}


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
    then the half-width of each value's 95% interval (null when it has none), then each interval's lower end,
    then why each grade has no value (null when it has one)]."""
    part = t.slice(lo, hi - lo).to_pydict()
    k = range(len(scorers))
    cols = [part[f"s{i}"] for i in k]
    halves = [[None if a is None or b is None else (b - a) / 2 for a, b in zip(part[f"l{i}"], part[f"u{i}"])]
              for i in k]
    lowers = [part[f"l{i}"] for i in k]
    whys = [part[f"r{i}"] for i in k]
    return [[f, lab, _r(dens, 6), _r(mx), int(n), *[_r(c[j]) for c in cols], *[_r(h[j]) for h in halves],
             *[_r(x[j]) for x in lowers], *[w[j] for w in whys]]
            for j, (f, lab, dens, mx, n) in enumerate(zip(part["feature"], part["label"], part["density"],
                                                          part["max"], part["n_firing"]))]


def _window(w, predicted=None, r=None) -> dict:
    doc = {"kind": w.kind, "context": w.context_id, "start": w.start, "tokens": list(w.tokens),
           "acts": [_r(a) for a in w.activations.tolist()]}
    if predicted is not None:
        doc["predicted"] = [_r(p, 1) for p in predicted]  # 0..10
        doc["r"] = r
    return doc


def _by_kind(details: dict) -> dict[str, dict]:
    """A simulation grade's windows by kind (top, quantile, random, ...): how many, and their mean correlation
    (None where a window's correlation is undefined, as on a window where nothing fires)."""
    out: dict[str, dict] = {}
    for kind, r in zip(details.get("kinds", []), details.get("per_window_correlation", [])):
        k = out.setdefault(kind, {"n": 0, "rs": []})
        k["n"] += 1
        if r is not None:
            k["rs"].append(r)
    return {kind: {"n": k["n"], "mean_r": _r(sum(k["rs"]) / len(k["rs"])) if k["rs"] else None}
            for kind, k in out.items()}


def _label_doc(r: dict) -> dict:
    scores = {n: {k: v for k, v in s.items() if k != "details"} | {"details": {
        k: v for k, v in s["details"].items() if k not in ("predicted", "per_window_correlation", "kinds")}}
        | ({"by_kind": _by_kind(s["details"])} if s["details"].get("kinds") else {})
        for n, s in r["scores"].items()}
    return {k: r[k] for k in ("explanation", "chosen", "explainer", "prompt_hash", "sampler_hash", "seed",
                              "created_at", "evidence", "imported", "carried", "run_id")} | {"scores": scores} | {
        # each grade's `imported`: its source when it came with an import (else None); an imported grade that
        # ours replaced in `scores` is kept here
        "imported_scores": {n: {k: v for k, v in s.items() if k != "details"}
                            for n, s in r.get("imported_scores", {}).items()}}


def feature_docs(store: Store, d: Dictionary, features: list[int], unsampled: bool = False) -> Iterator[tuple[int, dict]]:
    """(feature, page data) for each feature that has windows (with `unsampled`, every feature: one
    without windows says why in `sample`); its label rows and windows read in batches."""
    by_f: dict[int, list] = {}
    for r in store.labels.find(d.dictionary_id, features, candidates=True):
        by_f.setdefault(r["feature_id"], []).append(r)
    stats = {s.feature: s for s in store.activations.feature_stats(d.dictionary_id, features)}
    hists = store.activations.activation_histograms(d.dictionary_id, features)
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
                   "histogram": hists.get(smp.feature),
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


def feature_shard(docs: dict[int, dict]) -> int:
    """Features per page-data script: a power of two (the page finds feature f's script as f // shard), as
    many as keep a script of features like the largest of `docs` (a sample) under FILE_BYTES, at most
    FEATURE_SHARD. An estimate: features larger than the sample's largest make a larger script."""
    if not docs:
        return FEATURE_SHARD
    big = max(len(json.dumps(v, ensure_ascii=True)) for v in docs.values())
    fit = max(1, int(min(FILE_BYTES / max(big, 1), FEATURE_SHARD)))
    return min(FEATURE_SHARD, 1 << (fit.bit_length() - 1))


def overview_doc(store: Store, d: Dictionary, scorers: list[str], t) -> dict:
    """The index's plots (as `/api/overview` answers): the dictionary's density histogram, and the exported
    features' grades against density (simulation's, else the first scorer's; a fixed sample of SCATTER_POINTS)."""
    scorer = "simulation" if "simulation" in scorers else (scorers[0] if scorers else None)
    points: list[list] = []
    total = 0
    if scorer is not None:
        i = scorers.index(scorer)
        g = t.filter(pa.compute.and_(pa.compute.is_valid(t.column(f"s{i}")),
                                     pa.compute.greater(t.column("density"), 0)))
        total = g.num_rows
        keep = np.sort(np.argsort((g.column("feature").to_numpy().astype(np.uint64) * 2654435761) % 2**32,
                                  kind="stable")[:SCATTER_POINTS])
        part = g.take(pa.array(keep, pa.int64())).select(["feature", "density", f"s{i}", f"l{i}", f"u{i}"]).to_pydict()
        points = [[f, _r(dn, 8), _r(v), _r(lo), _r(hi)] for f, dn, v, lo, hi in zip(*part.values())]
    return {"dictionary": d.name, "density": store.activations.density_histogram(d.dictionary_id),
            "scatter": {"scorer": scorer, "total": total, "points": points}}


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
        first = dict(feature_docs(store, d, feats[:SIZE_SAMPLE].tolist()))  # measured, then written below
        shard = meta["feature_shard"] = feature_shard(first)
        pages = files = 0
        pending: dict[int, dict[int, dict]] = {}  # shard -> its features' page data, written once complete

        def flush(below: int) -> None:  # write the shards before `below` (the features are in order)
            nonlocal pages, files
            for k in sorted(x for x in pending if x < below):
                docs = pending.pop(k)
                if docs:
                    (tmp / "data" / "f" / f"{k}.js").write_text(
                        js("features", k, {str(f): docs[f] for f in sorted(docs)}), encoding="ascii")
                    pages, files = pages + len(docs), files + 1

        for lo in range(0, len(feats), 256):  # read in batches of 256 features, whatever the shard size
            ids = feats[lo:lo + 256].tolist()
            got = {f: first.pop(f) for f in ids if f in first}
            got.update(feature_docs(store, d, [f for f in ids if f not in got]))
            for f in ids:
                bucket = pending.setdefault(f // shard, {})
                if f in got:
                    bucket[f] = got[f]
            flush(ids[-1] // shard)
            if progress is not None:
                progress.update(len(ids))
        flush(2**63)
        meta["pages"] = pages
        (tmp / "data" / "overview.js").write_text(js("overview", overview_doc(store, d, meta["scorers"], t)),
                                                  encoding="ascii")
        (tmp / "data" / "meta.js").write_text(js("meta", meta), encoding="ascii")
        (tmp / "data" / "calibration.js").write_text(
            "CAL.show(" + json.dumps(calibration_doc(store), ensure_ascii=True, allow_nan=False) + ");\n",
            encoding="ascii")
        swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": str(out), "dictionary": d.name, "features": d.width, "listed": listed, "index_rows": rows,
            "capped": listed > INDEX_CAP, "pages": pages, "shards": meta["shards"], "feature_files": files,
            "feature_shard": meta["feature_shard"],
            "largest_feature_file": max((p.stat().st_size for p in (out / "data" / "f").iterdir()), default=0),
            "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file())}
