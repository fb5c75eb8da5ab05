"""features -> samples -> explanations -> scores, written to the store as each batch of features completes.

An interrupted run keeps every batch it committed; a rerun skips features that already have an
outcome (ok or skipped) under the same explainer, prompt hash, sampler config and seed, and retries
the ones that failed. `force=True` redoes them (replacing, never duplicating, their rows).
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from .errors import LabelError
from .explain.offline import Background, OfflineExplainer
from .records import Dictionary, FeatureLabel, SamplerConfig
from .sample import Sampler
from .score.embed import ContextEncoder
from .score.offline import SCORERS
from .store import Store


def label(store: Store, dictionary: Dictionary, features: np.ndarray | None = None, *, explainer: str = "offline",
          scorers: tuple[str, ...] = ("embedding", "simulation"), config: SamplerConfig | None = None, seed: int = 0,
          force: bool = False, batch: int = 32, progress: bool = False) -> dict:
    """Label features of one dictionary; returns counts per outcome and per score status."""
    if explainer != "offline":
        raise LabelError(f"unknown explainer {explainer!r}; available: offline")
    unknown = [s for s in scorers if s not in SCORERS]
    if unknown:
        raise LabelError(f"unknown scorer {', '.join(unknown)}; available: {', '.join(SCORERS)}")
    config = config or SamplerConfig()
    feats = np.arange(dictionary.width) if features is None else np.unique(np.asarray(features, dtype=np.int64))
    if len(feats) and (feats[0] < 0 or feats[-1] >= dictionary.width):
        raise LabelError(f"features must be in 0..{dictionary.width - 1}")
    sampler = Sampler(store, dictionary, config, seed)
    expl = OfflineExplainer(Background.from_store(store, dictionary.corpus_id))
    run_key = (expl.name, expl.prompt_hash, config.hash, seed)
    done = set() if force else store.labelled_features(dictionary.dictionary_id, run_key)
    todo = [int(f) for f in feats if int(f) not in done]
    encoder = ContextEncoder(store, dictionary.corpus_id)
    grade = [SCORERS[s](encoder) for s in scorers]

    def one(f: int) -> FeatureLabel:
        base = dict(dictionary=dictionary.name, feature=f, explainer=expl.name, prompt_hash=expl.prompt_hash,
                    sampler=config, seed=seed)
        sample = sampler.sample(f)
        if sample.status != "ok":
            return FeatureLabel(**base, status="skipped", reason=sample.reason)
        try:
            e = expl.explain(sample)
        except ValueError as err:
            return FeatureLabel(**base, status="failed", reason=f"explainer: {err}")
        return FeatureLabel(**base, status="ok", explanations=((e, tuple(s.score(sample, e) for s in grade)),))

    counts = {"ok": 0, "skipped": 0, "failed": 0, "already_done": len(feats) - len(todo)}
    score_counts: dict[str, dict[str, int]] = {s: {} for s in scorers}
    bar = tqdm(total=len(todo), unit="feat", disable=not progress, desc=f"label {dictionary.name}")
    for i in range(0, len(todo), batch):
        # offline methods are CPU-bound and torch already uses every core: one feature at a time
        results = [one(f) for f in todo[i:i + batch]]
        with store.writer() as w:  # each batch is kept as soon as it is done
            w.add_labels(dictionary.dictionary_id, results)
        for r in results:
            counts[r.status] += 1
            for _, scores in r.explanations:
                for s in scores:
                    score_counts[s.scorer][s.status] = score_counts[s.scorer].get(s.status, 0) + 1
        bar.update(len(results))
    bar.close()
    return {"dictionary": dictionary.name, "features": int(len(feats)), **counts, "scores": score_counts,
            "explainer": expl.name, "prompt_hash": expl.prompt_hash, "sampler_hash": config.hash, "seed": seed}
