"""The embedding scorer on all-MiniLM-L6-v2: how well the explanation's embedding separates the feature's
activating held-out windows from its non-firing ones (AUROC of cosine similarity, with its interval).
The offline simulator is in autointerp/simulate/offline.py, its grade in score/simulation.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..records import Explanation, FeatureSample, Score
from . import interval as ci
from . import metrics
from .base import Scorer, ScoringOptions, activating, evidence, n_tokens
from ..embed import ENCODING, ContextEncoder, embed_many, embed_text


class EmbeddingScorer(Scorer):
    """AUROC of cosine similarity (explanation vs window) separating activating from non-firing windows."""

    name = "embedding"
    encoder: ContextEncoder

    def __init__(self, encoder: ContextEncoder, options: ScoringOptions = ScoringOptions()) -> None:
        if isinstance(options, int):  # EmbeddingScorer(encoder, min_evidence)
            options = ScoringOptions(min_evidence=options)
        self.encoder, self.options = encoder, options
        self.version = f"{ENCODING}/context-mean-v2/min{options.min_evidence}/{options.suffix()}"

    def prepare(self, texts: Sequence[str]) -> None:
        """Embed the labels of a batch of features at once (before their grades are asked for)."""
        embed_many(list(texts))

    def too_little(self, sample: FeatureSample, units: list) -> Score | None:
        counts, short = evidence(activating(units), self.options.min_evidence)
        return self.undefined(short, counts) if short else None  # no vectors for a grade that cannot be given

    def judge(self, sample: FeatureSample, explanation: Explanation, units: list) -> list:
        return (self.encoder.window_vectors(units) @ embed_text(explanation.text)).tolist()

    def grade(self, sample: FeatureSample, units: list, observations: list) -> Score:
        labels, sims = activating(units), np.asarray(observations, np.float64)
        counts, short = evidence(labels, self.options.min_evidence)
        if short:  # an early adaptive round
            return self.undefined(short, counts, units)
        details = {**counts, "similarity": np.round(sims, 4).tolist()}
        return self.made(lambda: metrics.auroc(labels, sims),
                         lambda: ci.auroc(sims, labels, self.rng(sample), self.options.n_boot),
                         details, len(units), n_tokens(units))
