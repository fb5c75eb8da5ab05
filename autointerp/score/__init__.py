"""score: grade an explanation on the feature's held-out windows. Every scorer has `name`, `version` and
`score(sample, explanation) -> Score` (plain or `async`); a metric that cannot be computed is a Score
with status "undefined", never NaN."""

from __future__ import annotations

from ..errors import LabelError
from ..records import Dictionary
from ..store import Store
from .embed import ContextEncoder
from .offline import EmbeddingScorer, SimulationScorer

SCORERS = {"embedding": EmbeddingScorer, "simulation": SimulationScorer}


LLM_SCORERS = {"simulation": "simulate_json", "detection": "detect_json",
               "fuzzing": "fuzz_json"}  # name -> prompt template, used with a scorer model
TOP_LOGPROBS = 10  # alternatives asked for per output token: "0".."10" rarely spread wider


def known_scorers() -> list[str]:
    """Every scorer name `--scorer` takes (offline and LLM forms)."""
    return list(SCORERS) + [n for n in LLM_SCORERS if n not in SCORERS]


def parse_scorers(names: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """'embedding,simulation' -> ('embedding', 'simulation'); unknown or repeated names are an error."""
    out = tuple(x.strip() for x in (names.split(",") if isinstance(names, str) else names) if x.strip())
    known = known_scorers()
    unknown = [s for s in out if s not in known]
    if unknown:
        raise LabelError(f"unknown scorer {', '.join(unknown)}; available: {', '.join(known)}")
    if len(set(out)) != len(out):
        raise LabelError(f"scorer named twice in {', '.join(out)}")
    return out


def make_scorers(names, store: Store, dictionary: Dictionary, model: str | None = None, llm=None,
                 min_evidence: int = 10) -> list:
    """Scorers by name. With `model` (anthropic:MODEL, ...), the scorers that have an LLM form use it
    (through a client of their own, paced by `llm`, an LLMOptions); the others stay offline.
    `min_evidence`: windows of each class a classification grade (embedding, detection, fuzzing) needs."""
    names = parse_scorers(names)
    out, encoder, client = [], None, None
    for n in names:
        if model and n in LLM_SCORERS:
            from ..explain.prompts import load_template
            from ..llm import LLMOptions, make_client
            from .llm import LLMDetectionScorer, LLMFuzzingScorer, LLMSimulationScorer

            llm = llm or LLMOptions()
            client = client or make_client(model, store, llm)
            if n == "simulation":  # expected values over "0".."10" where the provider gives top_logprobs
                lp = TOP_LOGPROBS if llm.logprobs and client.provider.has_logprobs else 0
                out.append(LLMSimulationScorer(client, load_template(LLM_SCORERS[n]), top_logprobs=lp))
            else:
                cls = {"detection": LLMDetectionScorer, "fuzzing": LLMFuzzingScorer}[n]
                out.append(cls(client, load_template(LLM_SCORERS[n]), min_evidence=min_evidence))
        elif n not in SCORERS:
            raise LabelError(f"scorer {n!r} needs an LLM: pass --scorer-model anthropic:MODEL (or openai:, compat:)")
        else:
            encoder = encoder or ContextEncoder(store, dictionary.corpus_id)  # shared: one pass per context
            out.append(EmbeddingScorer(encoder, min_evidence) if n == "embedding" else SCORERS[n](encoder))
    return out


__all__ = ["SCORERS", "known_scorers", "ContextEncoder", "EmbeddingScorer", "SimulationScorer", "make_scorers", "parse_scorers"]
