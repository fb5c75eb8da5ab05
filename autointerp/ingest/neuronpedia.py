"""Ingest feature activations as Neuronpedia or SAEDashboard publish them, so a dictionary seen only
through Neuronpedia can be sampled and labelled here.

Accepted, by what PATH is:

- a Neuronpedia export source folder (`.../v1/MODEL/SOURCE/`, or its `activations/` folder) or one
  `activations/batch-N.jsonl[.gz]` file: Activation rows {index, tokens, values, modelId, layer, ...};
- an SAEDashboard output folder of `batch-N.json` or one such file: {model_id, layer, sae_set,
  features: [{feature_index, activations: [{tokens, values, bin_min, ...}]}]};
- a Neuronpedia feature JSON (its API's {modelId, layer, index, activations: [...]}), or a list of them.

Each distinct token sequence becomes a context (token strings interned to ids: the tokenizer is
"external"); each positive value an activation. The same text shown for several features is one
context, and a feature is zero wherever it has no value, so other features' windows serve as its
non-firing windows. Negative values are dropped (counted in the summary); a (feature, text, position)
given twice keeps its largest value. Bad input is a one-line IngestError naming the file and record,
and the store is left as it was. The width is `--width` (an index at or past it is such an error), else
the highest index + 1, unless that index is past 2^26 or far beyond every other (a stray: ingest/width.py).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from pathlib import Path

import numpy as np

from ..errors import IngestError
from ..store import Store
from .width import checked_width, implausible, inferred_width, outside


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise IngestError(f"{root} does not exist")
    for folder in (root / "activations", root):
        found = sorted(folder.glob("batch-*.jsonl.gz")) + sorted(folder.glob("batch-*.jsonl"))
        if found:
            return sorted(found, key=_batch_number)
    found = sorted(root.glob("batch-*.json"), key=_batch_number)
    if not found:
        raise IngestError(f"{root}: no activations/batch-N.jsonl.gz (Neuronpedia) or batch-N.json (SAEDashboard)")
    return found


def _batch_number(p: Path) -> int:
    digits = "".join(c for c in p.name.split(".")[0].removeprefix("batch-") if c.isdigit())
    return int(digits) if digits else 0


def _records(path: Path, meta: dict):
    """(feature, tokens, values, where) for every activation record in one file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            if path.name.endswith((".jsonl", ".jsonl.gz")):
                for i, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            row = json.loads(line)
                        except ValueError:
                            raise IngestError(f"{path}: line {i} is not valid JSON") from None
                        if not isinstance(row, dict):
                            raise IngestError(f"{path}: line {i} is not a JSON object")
                        meta.setdefault("model", row.get("modelId"))
                        meta.setdefault("hook", row.get("layer"))
                        yield row.get("index"), row.get("tokens"), row.get("values"), f"{path}: line {i}"
                return
            doc = json.load(fh)
    except (OSError, ValueError, EOFError) as e:
        raise IngestError(f"{path}: cannot read ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if isinstance(doc, dict) and isinstance(doc.get("features"), list):  # an SAEDashboard batch
        meta.setdefault("model", doc.get("model_id"))
        layer, sae_set = doc.get("layer"), doc.get("sae_set")
        meta.setdefault("hook", f"{layer}-{sae_set}" if sae_set else (None if layer is None else str(layer)))
        features, key = doc["features"], "feature_index"
    elif isinstance(doc, (dict, list)):  # Neuronpedia feature JSON, one or a list
        features, key = (doc if isinstance(doc, list) else [doc]), "index"
        first = features[0] if features and isinstance(features[0], dict) else {}
        meta.setdefault("model", first.get("modelId"))
        meta.setdefault("hook", first.get("layer"))
    else:
        raise IngestError(f"{path}: expected an SAEDashboard batch or Neuronpedia feature JSON")
    for j, feat in enumerate(features):
        if not isinstance(feat, dict) or not isinstance(feat.get("activations"), list):
            raise IngestError(f"{path}: feature {j} has no 'activations' list")
        for k, act in enumerate(feat["activations"]):
            if not isinstance(act, dict):
                raise IngestError(f"{path}: feature {j}, activation {k} is not an object")
            yield feat.get(key), act.get("tokens"), act.get("values"), f"{path}: feature {j}, activation {k}"


def _feature(x, where: str) -> int:
    try:
        f = int(x)
    except (TypeError, ValueError):
        raise IngestError(f"{where}: feature index {x!r} is not an integer") from None
    if f < 0 or str(f) != str(x).strip():
        raise IngestError(f"{where}: feature index {x!r} is not a non-negative integer")
    return f


def ingest_neuronpedia(store: Store, path: str | Path, *, dictionary: str, width: int | None = None,
                       model: str | None = None, hook: str | None = None, replace: bool = False) -> dict:
    root = Path(path)
    if width is not None:
        checked_width(width, "--width")
    files = _files(root)
    meta: dict = {}
    vocab: dict[str, int] = {}
    texts: dict[tuple[int, ...], int] = {}
    contexts: list[tuple[int, ...]] = []
    best: dict[tuple[int, int, int], float] = {}
    negatives = 0
    n_records = 0
    top, second, top_where = -1, None, ""  # the highest indices with a positive value, and where the highest is
    for p in files:
        for feat, tokens, values, where in _records(p, meta):
            f = _feature(feat, where)
            if width is not None and f >= width:
                raise outside(where, f, width)
            if width is None and (e := implausible(where, f)) is not None:
                raise e
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens) or not tokens:
                raise IngestError(f"{where}: 'tokens' must be a non-empty list of strings")
            if not isinstance(values, list) or len(values) != len(tokens):
                raise IngestError(f"{where}: {len(values) if isinstance(values, list) else 'no'} values for "
                                  f"{len(tokens)} tokens")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
                raise IngestError(f"{where}: values must be finite numbers")
            ids = tuple(vocab.setdefault(t, len(vocab)) for t in tokens)
            c = texts.get(ids)
            if c is None:
                c = texts[ids] = len(contexts)
                contexts.append(ids)
            n_records += 1
            positive = False
            for pos, v in enumerate(values):
                if v > 0:
                    positive = True
                    k = (f, c, pos)
                    if v > best.get(k, 0.0):
                        best[k] = float(v)
                elif v < 0:
                    negatives += 1
            if positive and f > top:
                second, top, top_where = (top if top >= 0 else second), f, where
            elif positive and f < top and (second is None or f > second):
                second = f
    if not best:
        raise IngestError(f"{root}: no positive activation in {n_records} records")
    keys = np.array(list(best), dtype=np.int64)
    feats = keys[:, 0]
    if width is None:  # the highest index + 1, unless it is a stray (checked above as each record came)
        width = inferred_width(top, second, top_where)
    strings = list(vocab)  # a token's id is its place in the order first seen (vocab.setdefault above)
    h = hashlib.sha256(json.dumps([strings, contexts]).encode())
    model, hook = model or meta.get("model") or "", hook or meta.get("hook") or ""
    with store.transaction() as w:
        cid, created = w.activations.add_corpus(name=f"neuronpedia:{dictionary}", tokenizer="external",
                                    ctx_len=max(len(c) for c in contexts), fingerprint="neuronpedia:" + h.hexdigest(),
                                    source=str(root.resolve()))
        if created:
            w.activations.add_contexts(cid, [np.array(c, dtype=np.int64) for c in contexts],
                           [[strings[i] for i in c] for c in contexts])
        b = w.activations.add_dictionary(name=dictionary, corpus_id=cid, model=str(model), hook=str(hook), width=int(width),
                             kind="external", source=str(root.resolve()), config={"from": "neuronpedia", **meta},
                             replace=replace, sorted_input=False)
        b.append(feats, keys[:, 1], keys[:, 2], np.array(list(best.values()), dtype=np.float32))
        n = b.finish()
    return {"dictionary": dictionary, "corpus_id": cid, "corpus_created": created, "files": len(files),
            "records": n_records, "contexts": len(contexts), "width": int(width), "nonzeros": n,
            "negatives_dropped": negatives, "model": model, "hook": hook}
