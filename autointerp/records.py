"""Records passed between the pipeline stages. Frozen dataclasses; units are stated per field."""

from __future__ import annotations

import functools
import hashlib
import json
import numbers
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Literal

import numpy as np

WindowKind = Literal["top", "quantile", "random", "neighbor"]
SampleStatus = Literal["ok", "dead", "too_rare"]


@dataclass(frozen=True)
class Corpus:
    """Token contexts shared by every dictionary captured or ingested over them."""

    corpus_id: int
    name: str
    tokenizer: str  # where token strings came from (a local folder, or "external")
    ctx_len: int  # tokens per context
    n_contexts: int
    fingerprint: str  # sha256 over the token ids (or over capture inputs): equal corpora are stored once


@dataclass(frozen=True)
class Dictionary:
    """One feature dictionary: an SAE's latents or a module's raw neurons, over one corpus."""

    dictionary_id: int
    name: str
    corpus_id: int
    model: str
    hook: str
    width: int  # number of features; ids are 0..width-1
    kind: str  # "sae", "neurons", "delphi" or "external"
    source: str  # where it came from (a folder or file path)
    config: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class FeatureStats:
    """Per-feature statistics over all tokens of the dictionary's corpus (values in activation units)."""

    feature: int
    n_firing: int  # tokens with a stored (nonzero) activation
    n_contexts: int  # contexts with at least one firing token
    density: float  # n_firing / tokens in corpus, in [0, 1]
    max_value: float | None
    mean_value: float | None  # mean over firing tokens only
    quantile_edges: tuple[float, ...]  # deciles 0.1..0.9 of the firing values
    max_context: int | None
    max_position: int | None


@dataclass(frozen=True)
class SamplerConfig:
    """How windows are drawn for one feature. Recorded with every sample (see `hash`).

    Windows are `window` tokens long. An activating window is placed so its peak token sits at
    offset `peak_offset` (default 3/4 of the window: most context precedes the token, as a causal
    model sees it); at the edges of a context the window is clamped inside it, so the peak moves.
    """

    window: int = 32
    peak_offset: int | None = None  # None: window * 3 // 4
    n_top: int = 20  # explain: highest-peak windows
    n_quantile_explain: int = 20  # explain: drawn across quantile bins of the remaining windows
    n_score_activating: int = 50  # score: held-out activating windows across the same bins
    n_score_nonfiring: int = 50  # score: random windows where the feature is zero throughout
    n_neighbor_negatives: int = 0  # score: top windows of neighbouring features, where this one is zero
    n_quantiles: int = 10  # bins of activating windows, equal count, by peak value
    min_windows: int = 10  # fewer distinct activating windows than this: "too_rare"

    def __post_init__(self) -> None:
        from .errors import UsageError

        if self.window < 2:
            raise UsageError(f"window must be at least 2 tokens, got {self.window}")
        if self.peak_offset is not None and not 0 <= self.peak_offset < self.window:
            raise UsageError(f"peak_offset must be in [0, {self.window}), got {self.peak_offset}")
        for name in ("n_top", "n_quantile_explain", "n_score_activating", "n_score_nonfiring",
                     "n_neighbor_negatives"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.n_quantiles < 1:
            raise UsageError(f"n_quantiles must be >= 1, got {self.n_quantiles}")
        if self.min_windows < 2:
            raise UsageError(f"min_windows must be >= 2 (one to explain, one to score), got {self.min_windows}")

    def check_limits(self) -> SamplerConfig:
        """Every value within what the store and the sampler hold (SAMPLER_LIMITS), else a UsageError: what
        `from_options` checks for the CLI, job files and imported labels. Not in `__post_init__`: a config the
        store recorded under an earlier autointerp must stay readable."""
        from .errors import UsageError

        for f in fields(self):  # whole numbers: a float or a boolean from a file is an error, not a count
            v = getattr(self, f.name)
            if (v is not None or f.name != "peak_offset") and (isinstance(v, bool)
                                                                 or not isinstance(v, numbers.Integral)):
                raise UsageError(f"{_named(f.name)} must be a whole number, got {v!r}")
        if self.window > MAX_WINDOW:
            raise UsageError(f"window must be at most {MAX_WINDOW} tokens (a stored window's start and length are "
                              f"16-bit), got {self.window}")
        sets = {"explain": ("n_top", "n_quantile_explain"),
                "score": ("n_score_activating", "n_score_nonfiring", "n_neighbor_negatives")}
        for which, names in sets.items():
            for name in names:
                if not 0 <= getattr(self, name) <= MAX_SET_WINDOWS:
                    raise UsageError(f"{_named(name)} must be from 0 to {MAX_SET_WINDOWS}, got {getattr(self, name)}")
            total = sum(getattr(self, n) for n in names)
            if total > MAX_SET_WINDOWS:
                short = ' + '.join(next((k for k, v in SAMPLER_OPTION_FIELDS.items() if v == n), n) for n in names)
                raise UsageError(f"the {which} set ({short} = {total}) may hold at most {MAX_SET_WINDOWS} windows")
        if not 1 <= self.n_quantiles <= MAX_QUANTILES:
            raise UsageError(f"n_quantiles must be from 1 to {MAX_QUANTILES}, got {self.n_quantiles}")
        if self.min_windows > MAX_MIN_WINDOWS:
            raise UsageError(f"min_windows must be at most {MAX_MIN_WINDOWS} (a feature's window count is 32-bit), "
                              f"got {self.min_windows}")
        return self

    @property
    def offset(self) -> int:
        return self.window * 3 // 4 if self.peak_offset is None else self.peak_offset

    @classmethod
    def from_options(cls, **options) -> SamplerConfig:
        """From the options as `sample` and `label` name them (`n_score`, ...: SAMPLER_OPTION_FIELDS) or
        by field name: the CLI and job files' [sampler] take the same names. Values beyond what the store
        and the sampler hold are a UsageError (`check_limits`)."""
        return cls(**{SAMPLER_OPTION_FIELDS.get(k, k): v for k, v in options.items()}).check_limits()

    def to_dict(self) -> dict:
        return asdict(self)


    @functools.cached_property
    def hash(self) -> str:
        """The config's identity (stored with every sample and label); computed once per config object."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# `--n-score` and [sampler] n_score name the field n_score_activating, and so on (options not listed here
# are named as their fields are: window, peak_offset, n_top, n_quantiles, min_windows)
SAMPLER_OPTION_FIELDS = {"n_quantile": "n_quantile_explain", "n_score": "n_score_activating",
                         "n_nonfiring": "n_score_nonfiring", "n_neighbors": "n_neighbor_negatives"}

# What a SamplerConfig and a seed may hold (beyond: UsageError, exit 2; in a job file, exit 20).
MAX_WINDOW = 2**16 - 1  # tokens a window: a stored window's start and length are 16-bit
# windows of one sample set (explain: n_top + n_quantile; score: n_score + n_nonfiring + n_neighbors): the
# sampler draws every feature of a batch at once (~1.25 x n_nonfiring draws each: 65,535 took 8.4 GB for 256
# features), and 4,096 windows of 32 tokens already fill the largest LLM prompt
MAX_SET_WINDOWS = 4096
MAX_QUANTILES = 100  # bins: the sampler holds a features x bins table; finer than percentiles splits nothing
MAX_MIN_WINDOWS = 2**31 - 1  # a feature's count of windows is a 32-bit integer in the store
SEED_RANGE = (-2**63, 2**63 - 1)  # seeds are stored as 64-bit integers (and hashed modulo 2^64: no two collide)
SAMPLER_LIMITS = (f"window 2..{MAX_WINDOW}; peak offset 0..window-1; n_top + n_quantile and n_score + n_nonfiring + "
                  f"n_neighbors each 0..{MAX_SET_WINDOWS}; n_quantiles 1..{MAX_QUANTILES}; min_windows "
                  f"2..{MAX_MIN_WINDOWS}; seed a 64-bit integer")


def _named(field_name: str) -> str:
    """A SamplerConfig field as a message names it: with its option name when that differs."""
    option = next((k for k, v in SAMPLER_OPTION_FIELDS.items() if v == field_name), None)
    return f"{field_name} (--{option.replace('_', '-')})" if option else field_name


def check_seed(seed) -> int:
    """A sampler seed: a 64-bit integer (the store's seed columns), else a UsageError."""
    from .errors import UsageError

    if (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
            or not SEED_RANGE[0] <= int(seed) <= SEED_RANGE[1]):
        raise UsageError(f"seed must be a 64-bit integer ({SEED_RANGE[0]} to {SEED_RANGE[1]}), got {seed!r}")
    return int(seed)


@dataclass(frozen=True, eq=False)
class Window:
    """A run of `len(tokens)` consecutive tokens of one context, with this feature's activation on each.

    `token_ids` and `activations` are arrays (int64, float64), as the sampler reads them: kept as arrays from
    the store to the scorers (a sequence given is made one). Equal windows have equal fields, arrays by value."""

    kind: str  # top | quantile | random | neighbor
    context_id: int  # the context's index in its source (delphi: the sequence index in `locations`)
    start: int  # position of the first token in the context
    tokens: tuple[str, ...]
    token_ids: np.ndarray  # int64, one per token
    activations: np.ndarray  # float64, one per token, 0.0 where the feature does not fire

    def __post_init__(self) -> None:
        object.__setattr__(self, "token_ids", np.asarray(self.token_ids, dtype=np.int64))
        object.__setattr__(self, "activations", np.asarray(self.activations, dtype=np.float64))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Window):
            return NotImplemented
        return (self.kind, self.context_id, self.start, self.tokens) == \
            (other.kind, other.context_id, other.start, other.tokens) and \
            np.array_equal(self.token_ids, other.token_ids) and np.array_equal(self.activations, other.activations)

    def __hash__(self) -> int:  # of the fields that are not arrays: equal windows hash alike
        return hash((self.kind, self.context_id, self.start, self.tokens))

    @property
    def peak(self) -> float:
        return float(self.activations.max()) if len(self.activations) else 0.0

    def to_json(self) -> dict:
        return {"kind": self.kind, "context_id": self.context_id, "start": self.start,
                "tokens": list(self.tokens), "activations": self.activations.tolist()}


@dataclass(frozen=True)
class OutputTokens:
    """What a feature's output direction promotes and suppresses, read through the logit lens
    (capture/lens.py): (token string, logit) pairs, promoted highest first, suppressed lowest first."""

    promoted: tuple[tuple[str, float], ...]
    suppressed: tuple[tuple[str, float], ...]
    promoted_ids: tuple[int, ...] = ()
    suppressed_ids: tuple[int, ...] = ()

    def to_json(self) -> dict:
        return {side: [{"token": t, "logit": round(v, 4)} for t, v in getattr(self, side)]
                for side in ("promoted", "suppressed")}


@dataclass(frozen=True)
class FeatureSample:
    """The explain set and the held-out score set of one feature; they never share a window."""

    dictionary: str
    feature: int
    status: SampleStatus
    reason: str  # empty when status == "ok"; otherwise why this feature has no usable sample
    explain: tuple[Window, ...]
    score: tuple[Window, ...]
    config: SamplerConfig
    seed: int
    n_candidates: int = 0  # distinct, non-overlapping activating windows the feature has
    created_at: datetime | None = None
    outputs: OutputTokens | None = None  # its logit-lens tokens, attached for explainers that read them

    def to_json(self) -> dict:
        return {"feature": self.feature, "dictionary": self.dictionary, "status": self.status,
                "reason": self.reason, "seed": self.seed, "sampler": self.config.to_dict(),
                "sampler_hash": self.config.hash, "n_candidates": self.n_candidates,
                "explain": [w.to_json() for w in self.explain],
                "score": [w.to_json() for w in self.score]}


ScoreStatus = Literal["ok", "undefined", "failed"]
LabelStatus = Literal["ok", "skipped", "failed"]


@dataclass(frozen=True)
class Explanation:
    """A label for one feature, with where it came from."""

    dictionary: str
    feature: int
    text: str
    explainer: str  # a method ("offline") or a model ("anthropic:claude-...")
    prompt_hash: str  # hash of the prompt template, or the method's version for offline methods
    sampler: SamplerConfig
    seed: int
    evidence: dict = field(default_factory=dict, compare=False)  # what the text was derived from
    created_at: datetime | None = None
    explanation_id: int | None = None
    imported: str | None = None  # a label made elsewhere: where it came from ("neuronpedia: PATH", ...)
    carried: str | None = None  # a label carried from a matched feature ("sae-v1#17, coactivation 0.93")


@dataclass(frozen=True)
class Simulation:
    """Predicted next to true activations on each scored window (one value per token)."""

    kinds: tuple[str, ...]  # the window kinds (quantile, random, ...)
    true: tuple[tuple[float, ...], ...]
    predicted: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class Failure:
    """Why a feature has no label (skipped, failed) or a grade no value: its `kind`, which summaries count
    ("dead", "too rare", "explainer", "explainer error", "reply", "provider", or a scorer's exception type),
    and the message. The store keeps it as its reason text, "kind: message"."""

    kind: str
    message: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}" if self.message else self.kind

    @classmethod
    def of_reason(cls, reason: str) -> Failure:
        """The Failure a stored reason text says (what precedes its first colon is the kind)."""
        kind, _, message = reason.partition(":")
        return cls(kind.strip() or "unknown", message.strip())


def _failure(record, status: str) -> None:
    """A record's `failure` and `reason` kept as one: given a Failure, its text is the reason; given only a
    reason (a row read back from the store), the Failure it says."""
    if record.failure is not None and not record.reason:
        object.__setattr__(record, "reason", str(record.failure))
    elif record.failure is None and status in ("failed", "skipped"):
        object.__setattr__(record, "failure", Failure.of_reason(record.reason))


@dataclass(frozen=True)
class Score:
    """One scorer's grade of one explanation. `value` is None unless status is "ok"; `interval` is its 95%
    bootstrap interval (score/interval.py), None when it has none; `n_windows` and `n_tokens` are the
    held-out windows (intruder: questions) the grade was computed on and the tokens in them."""

    scorer: str  # embedding | simulation | ...
    scorer_version: str  # method version, or model + prompt hash
    status: ScoreStatus
    value: float | None
    reason: str = ""  # why undefined or failed
    details: dict = field(default_factory=dict, compare=False)
    created_at: datetime | None = None
    interval: tuple[float, float] | None = None
    n_windows: int = 0
    n_tokens: int = 0
    failure: Failure | None = field(default=None, compare=False)  # status "failed": why (its reason, typed)

    def __post_init__(self) -> None:
        _failure(self, self.status)


@dataclass(frozen=True)
class Grades:
    """New grades of a label made earlier: a run whose scorers (name, version, model) it lacked."""

    dictionary: str
    feature: int
    explanation_id: int
    scores: tuple[Score, ...]


@dataclass(frozen=True)
class FeatureLabel:
    """The outcome of labelling one feature under one (explainer, prompt, sampler, seed): its
    explanations with their scores, or why there are none (status skipped or failed)."""

    dictionary: str
    feature: int
    explainer: str
    prompt_hash: str
    sampler: SamplerConfig
    seed: int
    status: LabelStatus
    reason: str = ""
    explanations: tuple[tuple[Explanation, tuple[Score, ...]], ...] = ()
    chosen: int = 0  # which explanation is the feature's label (best-of-k); the others are kept as candidates
    carry: str | None = None  # "kept": the label is a carried one; "rejected": carried, graded too low, explained
    failure: Failure | None = field(default=None, compare=False)  # skipped or failed: why (its reason, typed)

    def __post_init__(self) -> None:
        _failure(self, self.status)

    @property
    def run_key(self) -> tuple[str, str, str, int]:
        return (self.explainer, self.prompt_hash, self.sampler.hash, self.seed)


TRACE_MAX_CHARS = 2000  # the longest text `trace` takes (and the API's bound)


def traceable(d: Dictionary) -> bool:
    """Whether `trace` can run a text through `d` here: captured (not ingested) from a model still on disk."""
    from pathlib import Path

    return d.kind in ("sae", "neurons") and Path(d.model).exists()


@dataclass(frozen=True)
class TraceConfig:
    """A trace (capture/trace.py): `top` features listed per token; `max_chars`: the longest text taken;
    `matrix`: also every nonzero activation (tokens x features: large for a wide dictionary)."""

    top: int = 5
    max_chars: int = TRACE_MAX_CHARS
    matrix: bool = True

    def __post_init__(self) -> None:
        from .errors import UsageError

        if not 1 <= self.top <= 100:
            raise UsageError(f"--top must be from 1 to 100, got {self.top}")
        if self.max_chars < 1:
            raise UsageError(f"max_chars must be at least 1, got {self.max_chars}")
