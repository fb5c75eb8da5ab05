"""What the pipeline asks of its parts, in one place: explainers, scorers, simulators and LLM providers.

A part is any object with the required members of its Protocol below; the built-in ones subclass the
`...Base` classes, which declare the optional capabilities with their defaults:

| part      | required                                   | optional (default)                                      |
|-----------|--------------------------------------------|---------------------------------------------------------|
| Explainer | name, prompt_hash, explain(sample)         | uses_outputs (False), client (None)                      |
| Scorer    | name, version, score(sample, explanation)  | prepare(texts) (nothing), client (None), encoder (None)  |
| Simulator | name, version, predict(explanation, wins)  | prepare(texts) (nothing), client (None)                  |
| Provider  | name, model, complete(request), aclose()   | has_logprobs, has_prompt_logprobs, native_n,             |
|           |                                            | supports_batch (all False); a BatchProvider adds         |
|           |                                            | submit_batch, batch_done, batch_results                  |

`explain`, `score` and `predict` may be plain functions or coroutines. What the optional members mean:
`uses_outputs`: the samples handed to `explain` carry the feature's logit-lens tokens; `client`: the
LLMClient the part calls through (the run closes it, folds its journal at each commit and checks budgets
against it); `encoder`: a ContextEncoder whose new context encodings are stored at each commit;
`prepare(texts)`: called with every label of a batch before any is graded (the offline scorers embed them
in one pass).

A third-party part need not subclass anything: `adopt` (called once, when a run is built) checks the
required members and gives the optional ones their defaults, so the pipeline reads every capability as a
plain attribute and never probes. Plugins register factories for parts (plugins.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import LabelError

if TYPE_CHECKING:
    from .embed import ContextEncoder
    from .records import Explanation, FeatureSample, Score, Window

    Explained = Explanation | Sequence[Explanation]


@runtime_checkable
class LLMClient(Protocol):
    """What the pipeline asks of a part's LLM client (llm.client.LLMClient is the one autointerp makes; named
    here, not imported, so the contracts stay below the LLM layer that implements them)."""

    provider: Provider
    use_cache: bool
    run_id: str

    def fold(self) -> None: ...

    async def aclose(self) -> None: ...


# `client` and `encoder` are read-only members (properties here): the run only reads them, so a part may
# declare the narrower type it holds (llm.client.LLMClient; a ContextEncoder that is never None).


@runtime_checkable
class Explainer(Protocol):
    name: str
    prompt_hash: str
    uses_outputs: bool

    @property
    def client(self) -> LLMClient | None: ...

    def explain(self, sample: FeatureSample) -> Explained | Awaitable[Explained]: ...


@runtime_checkable
class Scorer(Protocol):
    name: str
    version: str

    @property
    def client(self) -> LLMClient | None: ...

    @property
    def encoder(self) -> ContextEncoder | None: ...

    def prepare(self, texts: Sequence[str]) -> None: ...

    def score(self, sample: FeatureSample, explanation: Explanation) -> Score | Awaitable[Score]: ...


@runtime_checkable
class Simulator(Protocol):
    name: str
    version: str

    @property
    def client(self) -> LLMClient | None: ...

    def prepare(self, texts: Sequence[str]) -> None: ...

    def predict(self, explanation: str, windows: list[Window]) -> Any: ...


@runtime_checkable
class Provider(Protocol):
    name: str
    model: str
    has_logprobs: bool
    has_prompt_logprobs: bool
    native_n: bool
    supports_batch: bool

    async def complete(self, req: Any) -> Any: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class BatchProvider(Provider, Protocol):
    async def submit_batch(self, items: list[tuple[str, Any]]) -> str: ...

    async def batch_done(self, batch_id: str) -> bool: ...

    async def batch_results(self, batch_id: str) -> dict[str, Any]: ...


class ExplainerBase:
    """The optional members of an Explainer, declared with their defaults."""

    uses_outputs: bool = False
    client: LLMClient | None = None


class ScorerBase:
    """The optional members of a Scorer, declared with their defaults."""

    client: LLMClient | None = None
    encoder: ContextEncoder | None = None

    def prepare(self, texts: Sequence[str]) -> None:
        """Nothing to prepare."""


class SimulatorBase:
    """The optional members of a Simulator, declared with their defaults."""

    client: LLMClient | None = None

    def prepare(self, texts: Sequence[str]) -> None:
        """Nothing to prepare."""


class ProviderBase:
    """The optional capabilities of a Provider, declared with their defaults (none)."""

    has_logprobs: bool = False
    has_prompt_logprobs: bool = False
    native_n: bool = False
    supports_batch: bool = False


REQUIRED = {"explainer": ("name", "prompt_hash", "explain"), "scorer": ("name", "version", "score"),
            "simulator": ("name", "version", "predict"), "provider": ("name", "model", "complete", "aclose")}
DEFAULTS: dict[str, dict[str, Any]] = {
    "explainer": {"uses_outputs": False, "client": None},
    "scorer": {"client": None, "encoder": None, "prepare": None},
    "simulator": {"client": None, "prepare": None},
    "provider": {"has_logprobs": False, "has_prompt_logprobs": False, "native_n": False, "supports_batch": False},
}


class _Declared:
    """A third-party part with its missing optional members declared (their defaults); everything else is
    the part's own."""

    def __init__(self, part: Any, defaults: dict[str, Any]) -> None:
        object.__setattr__(self, "_part", part)
        for k, v in defaults.items():
            object.__setattr__(self, k, (lambda texts: None) if k == "prepare" else v)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_part"), name)

    def __repr__(self) -> str:
        return repr(object.__getattribute__(self, "_part"))


def adopt(part: Any, kind: str) -> Any:
    """`part` as a `kind` ("explainer", "scorer", "simulator"): refused in one line when a required member
    is missing; given its missing optional members (their defaults) when it does not declare them."""
    missing = [m for m in REQUIRED[kind] if not hasattr(part, m)]
    if missing:
        raise LabelError(f"{kind} {part!r} lacks {', '.join(missing)}: a {kind} needs "
                         f"{', '.join(REQUIRED[kind])} (see autointerp.contracts)")
    absent = {k: v for k, v in DEFAULTS[kind].items() if not hasattr(part, k)}
    return _Declared(part, absent) if absent else part
