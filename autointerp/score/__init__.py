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


def parse_scorers(names: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """'embedding,simulation' -> ('embedding', 'simulation'); unknown or repeated names are an error."""
    out = tuple(x.strip() for x in (names.split(",") if isinstance(names, str) else names) if x.strip())
    unknown = [s for s in out if s not in SCORERS]
    if unknown:
        raise LabelError(f"unknown scorer {', '.join(unknown)}; available: {', '.join(SCORERS)}")
    if len(set(out)) != len(out):
        raise LabelError(f"scorer named twice in {', '.join(out)}")
    return out


def make_scorers(names, store: Store, dictionary: Dictionary) -> list:
    names = parse_scorers(names)
    encoder = ContextEncoder(store, dictionary.corpus_id) if names else None  # shared: one model pass per context
    return [SCORERS[n](encoder) for n in names]


__all__ = ["SCORERS", "ContextEncoder", "EmbeddingScorer", "SimulationScorer", "make_scorers", "parse_scorers"]
