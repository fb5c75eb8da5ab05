"""explain: turn a feature's explain set into a label. Every explainer has `name`, `prompt_hash` and
`explain(sample) -> Explanation` (plain or `async`); a feature it cannot label raises ExplainFailure."""

from __future__ import annotations

from ..errors import LabelError
from ..records import Dictionary
from ..store import Store
from .offline import Background, OfflineExplainer

EXPLAINERS = ("offline",)


def make_explainer(name: str, store: Store, dictionary: Dictionary):
    if name == "offline":
        return OfflineExplainer(Background.from_store(store, dictionary.corpus_id))
    raise LabelError(f"unknown explainer {name!r}; available: {', '.join(EXPLAINERS)}")


__all__ = ["EXPLAINERS", "Background", "OfflineExplainer", "make_explainer"]
