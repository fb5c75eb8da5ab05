"""The LLM explainer: a prompt template, the feature's explain set, one call (or n candidates), parsed labels.

A reply becomes a label only through `parse_explanation`: the last line of the form
"EXPLANATION: <text>". A reply without one, an empty or overlong label, or a refusal is an
ExplainFailure (the feature's typed failure), never a label. Provider failures after the retry
budget are ExplainFailures too. The explanation records the model as `explainer` and the template's
hash (with the rendering settings) as `prompt_hash`.
"""

from __future__ import annotations

import hashlib
import re

from ..contracts import ExplainerBase
from ..clock import utcnow
from ..errors import ExplainFailure
from ..llm import ChatRequest, LLMClient, ProviderError
from ..records import Explanation, FeatureSample
from .prompts import Template

_LINE = re.compile(r"^\s*\**\s*\[?explanation\]?\s*\**\s*:\s*\**\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_REFUSAL = re.compile(r"^(i can(not|'t)|i'm (sorry|unable)|sorry\b|as an ai\b)", re.IGNORECASE)
MAX_WORDS = 40


def parse_explanation(reply: str) -> str:
    """The label in a reply, or ExplainFailure saying why there is none."""
    found = _LINE.findall(reply or "")
    if not found:
        head = " ".join((reply or "").split())[:80]
        raise ExplainFailure(f"unparseable reply (no 'EXPLANATION:' line): {head!r}")
    text = found[-1].strip().strip("*").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":  # wrapped in quotes: unwrap, once
        text = text[1:-1].strip()
    if not text or text.lower() in ("none", "n/a", "<a short phrase>"):
        raise ExplainFailure("empty explanation in reply")
    if _REFUSAL.match(text):
        raise ExplainFailure(f"the model declined: {text[:80]!r}")
    if len(text.split()) > MAX_WORDS:
        raise ExplainFailure(f"explanation of {len(text.split())} words (at most {MAX_WORDS})")
    return text


def _norm(label: str) -> str:
    return " ".join(label.lower().split())


class LLMExplainer(ExplainerBase):
    client: LLMClient

    def __init__(self, client: LLMClient, template: Template, *, candidates: int = 1, max_examples: int = 40,
                 max_tokens: int = 400, temperature: float | None = None, outputs: bool = False) -> None:
        if candidates < 1:
            raise ValueError("candidates must be at least 1")
        self.client, self.template = client, template
        self.candidates, self.max_examples, self.max_tokens = candidates, max_examples, max_tokens
        # several candidates need variety; Claude takes no temperature, so only the provider default applies
        self.temperature = temperature
        self.name = client.model_id
        # the few-shot answers' labels: a reply that repeats one copied the prompt (small models do)
        self.examples = {_norm(parse_explanation(f.answer)) for f in template.fewshot if _LINE.search(f.answer)}
        self.uses_outputs = outputs  # the samples carry the feature's logit-lens tokens, shown after the examples
        settings = f"{template.hash}|examples={max_examples}|max_tokens={max_tokens}|t={temperature}" + \
            ("|outputs" if outputs else "")
        self.prompt_hash = hashlib.sha256(settings.encode()).hexdigest()[:16]

    def request(self, sample: FeatureSample) -> ChatRequest:
        wins = list(sample.explain)[: self.max_examples]
        return ChatRequest(model=self.client.provider.model, system=self.template.system,
                           messages=self.template.messages(wins, sample.outputs if self.uses_outputs else None),
                           max_tokens=self.max_tokens,
                           temperature=self.temperature, n=self.candidates,
                           shared_prefix=len(self.template.fewshot_turns))

    async def explain(self, sample: FeatureSample) -> list[Explanation]:
        if not sample.explain:
            raise ExplainFailure(f"feature {sample.feature}: no windows to explain")
        try:
            resp = await self.client.complete(self.request(sample), purpose="explain")
        except ProviderError as err:
            raise ExplainFailure(f"provider: {err}") from None
        now = utcnow()
        out, errors = [], []
        for i, reply in enumerate(resp.texts):
            try:
                text = parse_explanation(reply)
                if _norm(text) in self.examples:
                    raise ExplainFailure(f"the reply repeats the prompt's example label {text[:60]!r}")
            except ExplainFailure as err:
                errors.append(str(err))
                continue
            out.append(Explanation(dictionary=sample.dictionary, feature=sample.feature, text=text,
                                   explainer=self.name, prompt_hash=self.prompt_hash, sampler=sample.config,
                                   seed=sample.seed, created_at=now,
                                   evidence={"template": self.template.name, "candidate": i, "reply": reply[-2000:],
                                             "stop_reason": resp.stop_reasons[i] if i < len(resp.stop_reasons)
                                             else None}))
        if not out:
            raise ExplainFailure(errors[0] if len(errors) == 1 else f"no candidate parsed: {errors[0]}")
        return out
