"""Neuronpedia: the layout of its public datasets, so a Neuronpedia instance can import our labels.

    OUT/v1/config/explanation_type.jsonl, explanation_model_type.jsonl, explanation_score_type.jsonl,
                  explanation_score_model.jsonl     (the names our rows refer to; merged with what is there)
    OUT/v1/MODEL_ID/SOURCE_ID/features/batch-N.jsonl.gz           Neuron rows, 1,024 a batch
                              explanations/batch-N.jsonl.gz       Explanation rows, 1,024 a batch
                              explanation_scores/batch-N.jsonl.gz ExplanationScore rows, 1,024 a batch
                              activations/batch-N.jsonl.gz        Activation rows of features N*1024 ..

Feature rows carry the logit lens of the feature's output direction where the store has it (capture/lens.py):
`pos_str`/`pos_values` the promoted tokens and their logits, highest first, `neg_str`/`neg_values` the
suppressed, lowest first, as SAEDashboard computes and Neuronpedia shows them (empty lists otherwise).
Rows use Neuronpedia's column names (its Prisma models; `index` is a string, `layer` the source id such
as "6-res-jb") and, within a folder, one key set, as its importer takes the columns from the first line.
Neuronpedia's own dumps carry no scores; `explanation_scores/` is ours, in ExplanationScore's columns.
Scorers map to Neuronpedia's score types where the method matches (fuzzing -> eleuther_fuzz, detection
-> eleuther_recall, embedding -> eleuther_embedding: balanced accuracy or AUROC, 0..1) and to our own
type otherwise (simulation -> autointerp_simulation: a correlation, -1..1). Only defined grades are
written (ExplanationScore.value is required). `jsonDetails` holds the grade's details with its 95%
interval (ci_low, ci_high), the evidence (n_windows, n_tokens) and its level: "feature" for a grade that
uses no label (intruder; Neuronpedia has no feature-level score, so it rides on the label), else "label". Activations are the feature's explain windows (top ones
with binMin = -1, as SAEDashboard marks them; quantile ones with the decile of firing values their
peak falls in). The source folder is written beside its final place and renamed into it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..records import SamplerConfig
from ..sample import Sampler
from ..score.base import FEATURE_LEVEL
from ..store import Store
from .lock import one_export_at_a_time

BATCH = 1024
CREATOR = "autointerp"
SCORE_TYPES = {"fuzzing": "eleuther_fuzz", "detection": "eleuther_recall", "embedding": "eleuther_embedding",
               "simulation": "autointerp_simulation"}
SCORE_TYPE_DOCS = {
    "autointerp_simulation": ("autointerp simulation", "From the explanation alone, a simulator predicts the "
                              "activation of every token of held-out windows; the score is the Pearson "
                              "correlation of predicted and true activations pooled over all tokens (-1..1)."),
    "eleuther_fuzz": ("Fuzz", "Balanced accuracy of telling correctly highlighted windows from fuzzed ones."),
    "eleuther_recall": ("Detection", "Balanced accuracy of telling activating windows from non-activating ones."),
    "eleuther_embedding": ("Embedding", "AUROC of the similarity of the explanation to activating vs "
                           "non-activating windows."),
}
EXPLANATION_KEYS = ("id", "modelId", "layer", "index", "authorId", "description", "embedding", "typeName",
                    "explanationModelName", "umap_x", "umap_y", "umap_cluster", "umap_log_feature_sparsity")


def _id(*parts) -> str:
    """A stable id (the same label exported twice keeps its id)."""
    return "ai" + hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:23]


def _model_name(explainer: str) -> str:
    """anthropic:claude-x -> claude-x; offline -> autointerp-offline."""
    return explainer.split(":", 1)[1] if ":" in explainer else f"autointerp-{explainer}"


def _type_name(row: dict) -> str:
    template = row["evidence"].get("template")
    return f"autointerp_{template}" if template else f"autointerp_{row['explainer']}"


def _score_model(version: str) -> str:
    """The model a grade came from: 'anthropic:claude-x/abc' -> claude-x; 'all-MiniLM-L6-v2/...' -> all-MiniLM-L6-v2."""
    head = version.split("/", 1)[0]
    return head.split(":", 1)[1] if ":" in head else head


class _Batches:
    """Rows into `folder/batch-N.jsonl.gz`: N from the caller (activations) or every BATCH rows."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.n, self.written = folder, 0, 0
        self.rows: list[dict] = []
        folder.mkdir(parents=True)

    def add(self, row: dict, batch: int | None = None) -> None:
        if batch is not None and batch != self.n:
            self.flush()
            self.n = batch
        self.rows.append(row)
        if batch is None and len(self.rows) == BATCH:
            self.flush()
            self.n += 1

    def flush(self) -> None:
        if self.rows:
            with gzip.open(self.folder / f"batch-{self.n}.jsonl.gz", "wt", encoding="utf-8", compresslevel=5) as fh:
                for r in self.rows:
                    fh.write(json.dumps(r, ensure_ascii=False) + "\n")
            self.written += len(self.rows)
            self.rows = []


def _bins(edges: tuple[float, ...], peak: float) -> tuple[float, float, float]:
    """(binMin, binMax, binContains) of a quantile window: the decile of firing values its peak is in."""
    e = [0.0, *edges, float("inf")]
    i = max(0, min(len(e) - 2, int(np.searchsorted(e, peak, side="right")) - 1))
    return e[i], e[i + 1] if np.isfinite(e[i + 1]) else peak, 1.0 / (len(e) - 1)


@one_export_at_a_time
def write_neuronpedia(store: Store, out: str | Path, *, model_id: str, source_id: str, dictionary: str | None = None,
                      candidates: bool = False, activations: bool = True, seed: int = 0) -> dict:
    """Write one dictionary's features, labels, grades and activation windows in Neuronpedia's layout."""
    if not model_id.strip() or not source_id.strip() or "/" in model_id + source_id:
        raise ExportError("--model-id and --source-id are Neuronpedia's names (e.g. gpt2-small, 6-res-jb), without '/'")
    d = store.dictionary(dictionary)
    root = Path(out) / "v1"
    final = root / model_id / source_id
    tmp, old = final.with_name(f".{final.name}.autointerp-tmp"), final.with_name(f".{final.name}.autointerp-old")
    shutil.rmtree(tmp, ignore_errors=True)  # ours alone, left by a run cut short
    shutil.rmtree(old, ignore_errors=True)
    types: dict[str, set] = {"explanation_type": set(), "explanation_model_type": set(), "explanation_score_type": set(),
                             "explanation_score_model": set()}
    base = {"modelId": model_id, "layer": source_id}
    try:
        counts = {"features": _write_features(store, d, base, _Batches(tmp / "features")),
                  **_write_explanations(store, d, base, candidates, types, _Batches(tmp / "explanations"),
                                        _Batches(tmp / "explanation_scores")),
                  "activations": _write_activations(store, d, base, seed, _Batches(tmp / "activations"),
                                                    activations)}
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _merge_config(root / "config", types)
    return {"out": str(final), "dictionary": d.name, "model_id": model_id, "source_id": source_id, **counts}


def _write_features(store: Store, d, base: dict, feats: _Batches) -> int:
    """One row per feature: statistics and logit-lens tokens, read a slice at a time (never the whole table)."""
    has_lens = store.activations.has_output_tokens(d.dictionary_id)
    for lo in range(0, d.width, 65_536):
        part = range(lo, min(lo + 65_536, d.width))
        stats = {s.feature: s for s in store.activations.feature_stats(d.dictionary_id, part)}
        lens = store.activations.output_tokens(d.dictionary_id, part) if has_lens else {}
        for f in part:
            s, o = stats.get(f), lens.get(f)
            feats.add({**base, "index": str(f), "creatorId": CREATOR, "hookName": d.hook,
                       "maxActApprox": float(s.max_value or 0.0) if s else 0.0,
                       "frac_nonzero": float(s.density) if s else 0.0, "hasVector": False,
                       "pos_str": [t for t, _ in o.promoted] if o else [],
                       "pos_values": [v for _, v in o.promoted] if o else [],
                       "neg_str": [t for t, _ in o.suppressed] if o else [],
                       "neg_values": [v for _, v in o.suppressed] if o else []})
    feats.flush()
    return feats.written


def _write_explanations(store: Store, d, base: dict, candidates: bool, types: dict[str, set],
                        expl: _Batches, scores: _Batches) -> dict:
    """Each label and its defined grades (Neuronpedia's explanation and explanation_score rows); the type and
    model names used are added to `types`."""
    model_id, source_id = base["modelId"], base["layer"]
    for lo in range(0, d.width, 20_000):
        for r in store.labels.find(d.dictionary_id, range(lo, min(lo + 20_000, d.width)), candidates=candidates):
            eid = _id(model_id, source_id, r["feature_id"], r["explainer"], r["prompt_hash"], r["sampler_hash"],
                      r["seed"], r["evidence"].get("candidate", 0), r["explanation"])
            tname, mname = _type_name(r), _model_name(r["explainer"])
            types["explanation_type"].add(tname)
            types["explanation_model_type"].add(mname)
            row = dict.fromkeys(EXPLANATION_KEYS)
            row.update(id=eid, **base, index=str(r["feature_id"]), authorId=CREATOR, description=r["explanation"],
                       typeName=tname, explanationModelName=mname)
            expl.add(row)
            for name, sc in r["scores"].items():
                if sc["status"] != "ok":
                    continue
                stype, smodel = SCORE_TYPES.get(name, f"autointerp_{name}"), _score_model(sc["version"])
                types["explanation_score_type"].add(stype)
                types["explanation_score_model"].add(smodel)
                scores.add({"id": _id(eid, name, sc["version"]), "explanationId": eid, "value": sc["value"],
                            "explanationScoreTypeName": stype, "explanationScoreModelName": smodel,
                            "initiatedByUserId": CREATOR,
                            "jsonDetails": json.dumps({**sc["details"], "autointerp_scorer": name,
                                                       "autointerp_version": sc["version"],
                                                       "ci_low": (sc["ci"] or [None])[0],
                                                       "ci_high": (sc["ci"] or [None, None])[1],
                                                       "n_windows": sc["n_windows"], "n_tokens": sc["n_tokens"],
                                                       "autointerp_level": "feature" if name in FEATURE_LEVEL
                                                       else "label"}),
                            "createdAt": sc["created_at"]})
    expl.flush()
    scores.flush()
    return {"explanations": expl.written, "scores": scores.written}


def _write_activations(store: Store, d, base: dict, seed: int, acts: _Batches, wanted: bool) -> int:
    """The explain windows (top and quantile) of every feature, with their bins; none unless `wanted`."""
    if wanted:
        # the explain windows only: no held-out set is drawn for an export
        sampler = Sampler(store, d, SamplerConfig(n_score_activating=0, n_score_nonfiring=0), seed)
        corpus = store.corpus(d.corpus_id).name
        for lo in range(0, d.width, 256):
            part = range(lo, min(lo + 256, d.width))
            stats = {s.feature: s for s in store.activations.feature_stats(d.dictionary_id, part)}
            for smp in sampler.sample_many(list(part)):
                st = stats.get(smp.feature)
                for w in smp.explain:
                    assert st is not None and st.max_value is not None  # it has windows: it fired, so has stats
                    v = w.activations.tolist()
                    top = w.kind == "top"
                    bmin, bmax, bcont = (-1.0, float(st.max_value), -1.0) if top else _bins(st.quantile_edges, max(v))
                    acts.add({"id": _id(base["modelId"], base["layer"], smp.feature, w.context_id, w.start, seed),
                              **base, "index": str(smp.feature), "creatorId": CREATOR,
                              "dataSource": f"autointerp:{corpus}", "tokens": list(w.tokens), "maxValue": max(v),
                              "minValue": min(v), "values": v, "maxValueTokenIndex": int(np.argmax(v)),
                              "dfaValues": [], "dfaMaxValue": None, "dfaTargetIndex": None,
                              "binContains": bcont, "binMin": bmin, "binMax": bmax},
                             batch=smp.feature // BATCH)
    acts.flush()
    return acts.written


def _merge_config(folder: Path, types: dict[str, set]) -> None:
    """The type rows our rows refer to, added to whatever config rows the folder already has."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind, names in types.items():
        path = folder / f"{kind}.jsonl"
        rows = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    r = json.loads(line)
                    rows[r.get("name")] = r
        for n in sorted(names):
            if n in rows:
                continue
            display, doc = SCORE_TYPE_DOCS.get(n, (n, f"autointerp: {n}"))
            row = {"name": n, "displayName": display}
            if kind in ("explanation_type", "explanation_score_type"):
                row.update(description=doc, creatorName=CREATOR, creatorId=CREATOR)
            rows[n] = row
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows.values()), encoding="utf-8")
        tmp.replace(path)
