"""Offline scorers on all-MiniLM-L6-v2: embedding (AUROC) and simulation (pooled correlation).

Both grade an explanation on the feature's held-out score set only: activating windows ("quantile")
as positives, non-firing windows ("random", "neighbor") as negatives.
"""

from __future__ import annotations

import re

import numpy as np

from ..clock import utcnow as _now
from ..records import Explanation, FeatureSample, Score, Simulation
from . import metrics
from .embed import ENCODING, ContextEncoder, embed_many, embed_text

NEGATIVE_KINDS = ("random", "neighbor")
_STOP = set("a an the of in on at to for and or is are be as by with from that this it its token tokens such "
            "fires fire firing after before often like text words word".split())


def evidence(labels: np.ndarray, minimum: int) -> tuple[dict, str | None]:
    """The counts a classification grade rests on, and why it is undefined (None: enough evidence):
    at least `minimum` windows of each class."""
    n_pos = int(np.sum(labels == 1))
    n_neg = int(len(labels) - n_pos)
    counts = {"n_activating": n_pos, "n_nonfiring": n_neg, "min_evidence": minimum}
    if n_pos < minimum or n_neg < minimum:
        return counts, (f"too little evidence: {n_pos} activating and {n_neg} non-firing windows "
                        f"(at least {minimum} of each needed)")
    return counts, None


def _score(name: str, version: str, fn, details: dict) -> Score:
    try:
        value = fn()
    except metrics.Undefined as e:
        return Score(name, version, "undefined", None, str(e), details, _now())
    return Score(name, version, "ok", round(float(value), 6), "", details, _now())


def terms(explanation: str) -> set[str]:
    """The words an explanation names: its quoted strings if it has any, else its content words."""
    quoted = re.findall(r'"([^"]+)"', explanation)
    words = quoted or [w for w in re.findall(r"\w+", explanation) if w.lower() not in _STOP]
    return {w.strip().lower() for w in words if w.strip()}


class EmbeddingScorer:
    """AUROC of cosine similarity (explanation vs window) separating activating from non-firing windows."""

    name = "embedding"

    def __init__(self, encoder: ContextEncoder, min_evidence: int = 10) -> None:
        self.encoder, self.min_evidence = encoder, min_evidence
        self.version = f"{ENCODING}/context-mean-v2/min{min_evidence}"

    def prepare(self, texts: list[str]) -> None:
        """Embed the labels of a batch of features at once (before their grades are asked for)."""
        embed_many(texts)

    def score(self, sample: FeatureSample, explanation: Explanation) -> Score:
        labels = np.array([0 if w.kind in NEGATIVE_KINDS else 1 for w in sample.score], dtype=np.int64)
        counts, short = evidence(labels, self.min_evidence)
        if short:  # no vectors computed for a grade that cannot be given
            return Score(self.name, self.version, "undefined", None, short, counts, _now())
        sims = self.encoder.window_vectors(sample.score) @ embed_text(explanation.text)
        details = {**counts, "similarity": np.round(sims, 4).tolist()}
        return _score(self.name, self.version, lambda: metrics.auroc(labels, sims), details)


class SimulationScorer:
    """Predicts each token's activation from the explanation alone, then correlates with the truth.

    prediction = 1 where the token is a word the explanation names (`terms`), plus the cosine
    similarity of the token's in-context MiniLM vector to the explanation's embedding, floored at 0.
    Score: Pearson correlation pooled over every token of every held-out window (OpenAI's
    ev_correlation_score); per-window correlations and the pooled r² are kept in the details.
    """

    name = "simulation"
    version = f"{ENCODING}/match+similarity-v2"

    def __init__(self, encoder: ContextEncoder, keep_predictions: bool = True) -> None:
        self.encoder = encoder
        self.keep_predictions = keep_predictions

    def prepare(self, texts: list[str]) -> None:
        embed_many(texts)

    def predict(self, sample: FeatureSample, explanation: Explanation) -> Simulation:
        wins = sample.score
        if not wins:
            return Simulation(kinds=(), true=(), predicted=())
        named = terms(explanation.text)
        vecs, norms, _ = self.encoder.gather(wins)
        e = vecs.new_tensor(embed_text(explanation.text))
        sim = ((vecs @ e) / norms.clamp(min=1e-12)).clamp(min=0.0).numpy().astype(np.float64)
        pred = sim + self.encoder.matches(wins, named)
        starts = np.cumsum([len(w.tokens) for w in wins])[:-1]
        return Simulation(kinds=tuple(w.kind for w in wins), true=tuple(w.activations for w in wins),
                          predicted=tuple(np.split(pred, starts)))

    def score(self, sample: FeatureSample, explanation: Explanation) -> Score:
        return grade_simulation(self.name, self.version, self.predict(sample, explanation), self.keep_predictions)


SHOW_ACTIVE, SHOW_QUIET = 20, 5  # windows whose predictions a grade keeps (what the browser shows)


def shown_windows(kinds) -> list[int]:
    """Indices of the windows a simulation grade keeps predictions of: the first SHOW_ACTIVE activating
    and the first SHOW_QUIET non-firing ones, in window order."""
    active = [i for i, k in enumerate(kinds) if k not in NEGATIVE_KINDS][:SHOW_ACTIVE]
    quiet = [i for i, k in enumerate(kinds) if k in NEGATIVE_KINDS][:SHOW_QUIET]
    return sorted(active + quiet)


def grade_simulation(name: str, version: str, sim: Simulation, keep_predictions: bool = True,
                     extra: dict | None = None) -> Score:
    """OpenAI's scores of a simulation: Pearson correlation pooled over every token of every window
    (ev_correlation_score) as the value; per-window correlations and the pooled r² in the details,
    and the predictions on the windows a reader is shown (`shown_windows`: `predicted_windows` holds
    their indices, `predicted` their predictions). Predictions are rescaled to the true maximum for r²
    (they are on the simulator's own scale)."""
    true = [np.asarray(t, dtype=np.float64) for t in sim.true]
    preds = [np.asarray(p, dtype=np.float64) for p in sim.predicted]
    per_window = metrics.correlations(true, preds)  # None: a window with no correlation of its own
    n_neg = sum(k in NEGATIVE_KINDS for k in sim.kinds)
    details: dict = {"per_window_correlation": per_window, "kinds": list(sim.kinds), "n_windows": len(sim.kinds),
                     "n_activating": len(sim.kinds) - n_neg, "n_nonfiring": n_neg,
                     "n_tokens": int(sum(len(t) for t in true)), **(extra or {})}
    if true:
        t_all, p_all = np.concatenate(true), np.concatenate(preds)
        try:
            details["r_squared"] = round(metrics.r_squared(t_all, p_all / max(p_all.max(), 1e-12)
                                                           * max(t_all.max(), 0)), 4)
        except metrics.Undefined:
            details["r_squared"] = None
        if keep_predictions:
            shown = shown_windows(sim.kinds)
            details["predicted_windows"] = shown
            details["predicted"] = [np.round(preds[i], 3).tolist() for i in shown]
    else:
        t_all = p_all = np.zeros(0)
    return _score(name, version, lambda: metrics.correlation(t_all, p_all), details)
