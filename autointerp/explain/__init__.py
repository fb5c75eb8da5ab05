"""explain: turn a feature's explain set into a label. Every explainer has `name`, `prompt_hash` and
`explain(sample)` (plain or `async`) returning an Explanation or a list of candidates; a feature it
cannot label raises ExplainFailure."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from ..errors import LabelError
from ..records import Dictionary
from ..store import Store
from .offline import Background, OfflineExplainer

EXPLAINERS = ("offline", "anthropic:MODEL", "openai:MODEL", "compat:MODEL (with base_url)")


@dataclass(frozen=True)
class LLMOptions:
    """How an LLM explainer reaches its model and paces itself (see autointerp.llm)."""

    base_url: str | None = None
    api_key_env: str | None = None
    prompt: str = "explain_highlight"
    candidates: int = 1
    requests_per_minute: float = 50
    input_tokens_per_minute: float | None = None
    output_tokens_per_minute: float | None = None
    max_in_flight: int = 16
    attempts: int = 6
    timeout: float = 60.0
    use_cache: bool = True
    prices: dict = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


def make_explainer(name: str, store: Store, dictionary: Dictionary, llm: LLMOptions | None = None):
    if name == "offline":
        return OfflineExplainer(Background.from_store(store, dictionary.corpus_id))
    if ":" in name:
        from ..llm import LimitConfig, LLMClient, RetryConfig, make_provider
        from .llm import LLMExplainer
        from .prompts import load_template

        o = llm or LLMOptions()
        template = load_template(o.prompt)
        provider = make_provider(name, base_url=o.base_url, api_key_env=o.api_key_env, timeout=o.timeout)
        client = LLMClient(provider, store, run_id=o.run_id, use_cache=o.use_cache, prices=o.prices,
                           limits=LimitConfig(o.requests_per_minute, o.input_tokens_per_minute,
                                              o.output_tokens_per_minute, o.max_in_flight),
                           retry=RetryConfig(attempts=o.attempts))
        return LLMExplainer(client, template, candidates=o.candidates)
    raise LabelError(f"unknown explainer {name!r}; available: {', '.join(EXPLAINERS)}")


__all__ = ["EXPLAINERS", "Background", "LLMOptions", "OfflineExplainer", "make_explainer"]
