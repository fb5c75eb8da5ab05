"""The simulation scorer: a simulator (autointerp/simulate) predicts every token's activation on the
held-out windows from the explanation alone; the grade is the Pearson correlation pooled over every
token of every window (OpenAI's ev_correlation_score), with per-window correlations and the pooled r²
in the details, and its 95% interval from a bootstrap over windows (activating and non-firing apart).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..records import Explanation, FeatureSample, Score, Window
from ..simulate import OfflineSimulator
from . import interval as ci
from . import metrics
from .base import NEGATIVE_KINDS, AsyncScorer, Scorer, ScoringLoop, ScoringOptions, activating, n_tokens

SHOW_ACTIVE, SHOW_QUIET = 20, 5  # windows whose predictions a grade keeps (what the browser shows)


def shown_windows(kinds) -> list[int]:
    """Indices of the windows a simulation grade keeps predictions of: the first SHOW_ACTIVE activating
    and the first SHOW_QUIET non-firing ones, in window order."""
    active = [i for i, k in enumerate(kinds) if k not in NEGATIVE_KINDS][:SHOW_ACTIVE]
    quiet = [i for i, k in enumerate(kinds) if k in NEGATIVE_KINDS][:SHOW_QUIET]
    return sorted(active + quiet)


class _Grading(ScoringLoop):
    """The grade of a simulation (shared by the offline and LLM forms)."""

    keep_predictions = True

    def grade(self, sample: FeatureSample, units: list[Window], observations: list) -> Score:
        preds = [np.asarray(p, dtype=np.float64) for p, _ in observations]
        info: dict = {}
        for _, i in observations:  # what the simulator said about its calls, summed over rounds
            for k, v in i.items():
                info[k] = v if isinstance(v, str) or k not in info else info[k] + v
        if "from_logprobs" in info:
            info["from_logprobs"] = round(float(np.mean([i["from_logprobs"] for _, i in observations
                                                         if "from_logprobs" in i])), 4)
        true = [w.activations for w in units]  # float64 arrays (records.Window)
        kinds = [w.kind for w in units]
        n_neg = sum(k in NEGATIVE_KINDS for k in kinds)
        details: dict = {"per_window_correlation": metrics.correlations(true, preds), "kinds": kinds,
                         "n_windows": len(kinds), "n_activating": len(kinds) - n_neg, "n_nonfiring": n_neg,
                         "n_tokens": n_tokens(units), **info}
        if not true:
            return self.undefined("no held-out windows", details, units)
        t_all, p_all = np.concatenate(true), np.concatenate(preds)
        try:  # predictions are on the simulator's own scale: rescaled to the true maximum for r²
            details["r_squared"] = round(metrics.r_squared(t_all, p_all / max(p_all.max(), 1e-12)
                                                           * max(t_all.max(), 0)), 4)
        except metrics.Undefined:
            details["r_squared"] = None
        if self.keep_predictions:
            shown = shown_windows(kinds)
            details["predicted_windows"] = shown
            details["predicted"] = [np.round(preds[i], 3).tolist() for i in shown]
        moments = ci.window_moments(true, preds)
        return self.made(lambda: metrics.correlation(t_all, p_all),
                         lambda: ci.pooled_correlation(moments, activating(units), self.rng(sample),
                                                       self.options.n_boot),
                         details, len(units), n_tokens(units))


class SimulationScorer(_Grading, Scorer):
    """Simulation on the offline simulator (no model calls)."""

    name = "simulation"

    def __init__(self, encoder, options: ScoringOptions = ScoringOptions(), keep_predictions: bool = True) -> None:
        self.simulator = OfflineSimulator(encoder)
        self.encoder, self.options, self.keep_predictions = encoder, options, keep_predictions
        self.version = f"{self.simulator.version}/{options.suffix()}"

    def prepare(self, texts: Sequence[str]) -> None:
        self.simulator.prepare(texts)

    def too_little(self, sample: FeatureSample, units: list) -> Score | None:
        return None if units else self.undefined("no held-out windows")

    def judge(self, sample: FeatureSample, explanation: Explanation, units: list) -> list:
        return _with_info(self.simulator.predict(explanation.text, units))


class LLMSimulationScorer(_Grading, AsyncScorer):
    """Simulation on an LLM simulator (dense JSON, sparse, or all at once from the prompt's logprobs):
    see autointerp/simulate/llm.py."""

    name = "simulation"
    budgeted = True

    def __init__(self, simulator, options: ScoringOptions = ScoringOptions()) -> None:
        self.simulator, self.options = simulator, options
        self.client = simulator.client
        self.version = f"{simulator.version}/{options.suffix(budgeted=True)}"

    def too_little(self, sample: FeatureSample, units: list) -> Score | None:
        return None if units else self.undefined("no held-out windows")

    async def judge(self, sample: FeatureSample, explanation: Explanation, units: list) -> list:
        return _with_info(await self.simulator.predict(explanation.text, list(units)))


def _with_info(p) -> list[tuple]:
    """(prediction, info) per window: the simulator's info on the first window of the call only, so a
    grade over several rounds sums each round's counts once."""
    return [(v, p.info if i == 0 else {}) for i, v in enumerate(p.values)]
