"""score: grade an explanation on the feature's held-out windows. Every scorer has `name`, `version` and
`score(sample, explanation) -> Score` (plain or `async`); those in FEATURE_LEVEL (intruder) ignore the
explanation and grade the feature; a metric that cannot be computed is a Score with status "undefined", never
NaN, and every grade carries its 95% bootstrap interval and the evidence it rests on (base.py).

Offline (all-MiniLM-L6-v2): embedding, simulation (simulate/offline.py), intruder. With a scorer model
(--scorer-model): simulation (simulate/llm.py: dense JSON or sparse), detection, fuzzing, intruder.
"""

from __future__ import annotations

from ..errors import UsageError
from ..records import Dictionary
from ..store import Store
from .base import FEATURE_LEVEL, AdaptiveBudget, Scorer, ScoringOptions
from ..embed import ContextEncoder
from .intruder import IntruderScorer, OfflineIntruderScorer
from .offline import EmbeddingScorer
from .simulation import LLMSimulationScorer, SimulationScorer

SCORERS = {"embedding": EmbeddingScorer, "simulation": SimulationScorer, "intruder": OfflineIntruderScorer}
LLM_SCORERS = {"simulation": "simulate_json", "detection": "detect_json", "fuzzing": "fuzz_json",
               "intruder": "intruder_json"}  # name -> prompt template, used with a scorer model
# What each grade measures, one sentence each: shown on the browser's pages, by `show`, and in README.
MEASURES = {
    "simulation": "Predicts every token's activation from the label alone (offline: the patterns the label states; "
                  "with a scorer model: the LLM) on held-out windows, and grades the correlation with the true "
                  "activations: 1 is perfect, 0 no better than chance.",
    "embedding": "How well the label's MiniLM embedding tells the held-out windows where the feature fires from those "
                 "where it does not (AUROC: 0.5 is chance); it cannot read context rules, so it is off by default.",
    "intruder": "Grades the feature, not the label: how often a judge picks the one window where the feature does not "
                "fire among its firing ones (chance is 1/(k+1)); a coherent feature scores high whatever its label.",
    "detection": "An LLM given the label says which held-out windows the feature fires in; the grade is balanced "
                 "accuracy over firing and non-firing windows (0.5 is chance).",
    "fuzzing": "An LLM given the label says whether the marked tokens of each held-out window are the ones the feature "
               "fires on; the grade is balanced accuracy (0.5 is chance).",
}
TOP_LOGPROBS = 10  # alternatives asked for per output token: "0".."10" rarely spread wider


def known_scorers() -> list[str]:
    """Every scorer name `--scorer` takes (offline and LLM forms, then the plugins')."""
    from ..plugins import registered

    builtin = list(SCORERS) + [n for n in LLM_SCORERS if n not in SCORERS]
    return builtin + [n for n in registered("scorer") if n not in builtin]


def parse_scorers(names: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """'embedding,simulation' -> ('embedding', 'simulation'); unknown or repeated names are an error."""
    out = tuple(x.strip() for x in (names.split(",") if isinstance(names, str) else names) if x.strip())
    known = known_scorers()
    unknown = [s for s in out if s not in known]
    if unknown:
        raise UsageError(f"unknown scorer {', '.join(unknown)}; available: {', '.join(known)}")
    if len(set(out)) != len(out):
        raise UsageError(f"scorer named twice in {', '.join(out)}")
    return out


def make_scorers(names, store: Store, dictionary: Dictionary, model: str | None = None, llm=None,
                 options: ScoringOptions = ScoringOptions()) -> list:
    """Scorers by name. With `model` (anthropic:MODEL, ...), the scorers that have an LLM form use it
    (through a client of their own, paced by `llm`, an LLMOptions); the others stay offline."""
    from .. import plugins

    names = parse_scorers(names)
    out, encoder, client = [], None, None
    for n in names:
        if n not in SCORERS and n not in LLM_SCORERS:  # a plugin's
            out.append(plugins.make("scorer", n, plugins.PluginContext(store, dictionary, llm, options, model)))
        elif model and n in LLM_SCORERS:
            from ..explain.prompts import load_template
            from ..llm import LLMOptions, make_client
            from ..simulate import make_llm_simulator
            from .llm import LLMDetectionScorer, LLMFuzzingScorer

            llm = llm or LLMOptions()
            client = client or make_client(model, store, llm)
            if n == "simulation":  # expected values over "0".."10" where the provider gives top_logprobs
                lp = TOP_LOGPROBS if llm.logprobs and client.provider.has_logprobs else 0
                out.append(LLMSimulationScorer(make_llm_simulator(
                    client, options.simulator, options.windows_per_call, lp,
                    plugins.PluginContext(store, dictionary, llm, options, model), llm.call_budget(model)), options))
            elif n == "intruder":
                out.append(IntruderScorer(client, load_template(LLM_SCORERS[n]), options))
            else:
                cls = {"detection": LLMDetectionScorer, "fuzzing": LLMFuzzingScorer}[n]
                out.append(cls(client, load_template(LLM_SCORERS[n]), options))
        elif n not in SCORERS:
            raise UsageError(f"scorer {n!r} needs an LLM: pass --scorer-model anthropic:MODEL (or openai:, compat:)")
        else:
            encoder = encoder or ContextEncoder(store.activations, store.vectors, dictionary.corpus_id)  # shared: one pass per context
            out.append(SCORERS[n](encoder, options))
    return out


__all__ = ["FEATURE_LEVEL", "SCORERS", "AdaptiveBudget", "ContextEncoder", "EmbeddingScorer", "IntruderScorer",
           "OfflineIntruderScorer", "Scorer", "ScoringOptions", "SimulationScorer", "known_scorers",
           "make_scorers", "parse_scorers"]
