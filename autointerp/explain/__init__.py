"""explain: turn a feature's explain set into a label. Every explainer has `name`, `prompt_hash` and
`explain(sample)` (plain or `async`) returning an Explanation or a list of candidates; a feature it
cannot label raises ExplainFailure."""

from __future__ import annotations

from ..contracts import ExplainerBase
from ..errors import LabelError, UsageError
from ..llm import LLMOptions
from ..records import Dictionary
from ..store import Store
from .offline import Background, OfflineExplainer

EXPLAINERS = ("offline", "anthropic:MODEL", "openai:MODEL", "compat:MODEL (with base_url)", "imported")
IMPORTED = "imported"


class ImportedLabels(ExplainerBase):
    """Not an explainer: a run with it grades the labels imported into the store (`ingest labels`) with
    its scorers, on its own held-out windows, and explains nothing."""

    name, prompt_hash = IMPORTED, ""

    def explain(self, sample):  # never asked: the plan of such a run explains no feature
        from ..errors import ExplainFailure

        raise ExplainFailure("imported labels are graded, not explained")


def make_explainer(name: str, store: Store, dictionary: Dictionary, llm: LLMOptions | None = None):
    from .. import plugins

    if name == IMPORTED:
        return ImportedLabels()
    if name in plugins.registered("explainer") and name not in ("offline", IMPORTED):
        return plugins.make("explainer", name, plugins.PluginContext(store, dictionary, llm or LLMOptions()))
    outputs = store.activations.has_output_tokens(dictionary.dictionary_id)
    if name == "offline":  # corpus statistics read when first used; output tokens named where borne out
        return OfflineExplainer(lambda: Background.from_store(store.activations, dictionary.corpus_id), outputs=outputs)
    if ":" in name:
        from ..llm import make_client
        from .llm import LLMExplainer
        from .prompts import load_template

        o = llm or LLMOptions()
        template = load_template(o.prompt)  # a bad template fails before any client is made
        if o.outputs and not outputs:
            raise LabelError(f"dictionary {dictionary.name!r} has no output tokens to show the explainer (capture "
                             "a causal LM's SAE, or NAME:input of a linear layer, with --outputs)")
        return LLMExplainer(make_client(name, store, o), template, candidates=o.candidates, outputs=o.outputs)
    raise UsageError(f"unknown explainer {name!r}; available: {', '.join(EXPLAINERS)}"
                     + "".join(f", {p} (plugin)" for p in plugins.registered("explainer")))


__all__ = ["EXPLAINERS", "IMPORTED", "ImportedLabels", "Background", "LLMOptions", "OfflineExplainer", "make_explainer"]
