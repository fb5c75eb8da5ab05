"""The job file: what to label, how, and within what budget.

    [job]
    dictionary = "gpt2/6-res"            # default: the store's only dictionary
    features = "0-16383"                 # default: all
    explainer = "anthropic:claude-haiku-4-5"   # or "offline", "openai:MODEL", "compat:MODEL"
    scorers = ["detection", "simulation"]
    scorer_model = "anthropic:claude-haiku-4-5"
    prompt = "explain_highlight"
    candidates = 1
    select_by = "detection"              # best-of-k: the scorer that picks among candidates
    seed = 0
    concurrency = 8
    batch = false                        # the providers' batch APIs (half price)

    [sampler]                            # SamplerConfig fields (window, n_top, ...)

    [limits]                             # the provider: rpm, itpm, otpm, max_in_flight, base_url, api_key_env

    [budget]                             # any of: dollars, tokens, features, minutes

Unknown sections or keys, and values of the wrong type, are errors that name them: a typo must not
silently run the default.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import AutointerpError
from ..records import SamplerConfig


class JobConfigError(AutointerpError):
    """The job file cannot be used; nothing ran."""

    exit_code = 20


@dataclass(frozen=True)
class JobConfig:
    dictionary: str | None = None
    features: str | None = None
    explainer: str = "offline"
    scorers: tuple[str, ...] = ("embedding", "simulation")
    scorer_model: str | None = None
    prompt: str = "explain_highlight"
    candidates: int = 1
    select_by: str | None = None
    seed: int = 0
    concurrency: int = 8
    batch: bool = False
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    limits: dict = field(default_factory=dict)
    budget: dict = field(default_factory=dict)
    text: str = ""  # the file as given, kept in the ledger

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


JOB_KEYS = {"dictionary": str, "features": str, "explainer": str, "scorers": list, "scorer_model": str, "prompt": str,
            "candidates": int, "select_by": str, "seed": int, "concurrency": int, "batch": bool}
LIMIT_KEYS = {"rpm": (int, float), "itpm": (int, float), "otpm": (int, float), "max_in_flight": int,
              "base_url": str, "api_key_env": str, "attempts": int, "timeout": (int, float)}
BUDGET_KEYS = {"dollars": (int, float), "tokens": int, "features": int, "minutes": (int, float)}


def _check(section: str, got: dict, allowed: dict) -> dict:
    for k, v in got.items():
        if k not in allowed:
            raise JobConfigError(f"[{section}] has no key {k!r}; known: {', '.join(allowed)}")
        want = allowed[k]
        if isinstance(v, bool) and want is not bool and bool not in (want if isinstance(want, tuple) else (want,)):
            raise JobConfigError(f"[{section}] {k} must be {_name(want)}, not a boolean")
        if not isinstance(v, want):
            raise JobConfigError(f"[{section}] {k} must be {_name(want)}, not {type(v).__name__} {v!r}")
    return got


def _name(t) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def parse_config(text: str, source: str = "job file") -> JobConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise JobConfigError(f"{source}: not valid TOML: {e}") from None
    unknown = set(doc) - {"job", "sampler", "limits", "budget"}
    if unknown:
        raise JobConfigError(f"{source}: unknown section(s) {', '.join(sorted(unknown))}; "
                             "known: job, sampler, limits, budget")
    job = _check("job", doc.get("job", {}), JOB_KEYS)
    if "scorers" in job and not all(isinstance(x, str) for x in job["scorers"]):
        raise JobConfigError("[job] scorers must be a list of names")
    sampler_keys = {f.name: int for f in fields(SamplerConfig)}
    sampler_keys["peak_offset"] = int
    sampler = _check("sampler", doc.get("sampler", {}), sampler_keys)
    limits = _check("limits", doc.get("limits", {}), LIMIT_KEYS)
    budget = _check("budget", doc.get("budget", {}), BUDGET_KEYS)
    for k, v in budget.items():
        if v < 0:
            raise JobConfigError(f"[budget] {k} must be >= 0")
    try:
        cfg = SamplerConfig(**sampler)
    except AutointerpError as e:
        raise JobConfigError(f"[sampler] {e}") from None
    if "scorers" in job:
        job["scorers"] = tuple(job["scorers"])
    if job.get("batch") and set(budget) & {"dollars", "tokens", "features"}:
        # a batch run submits every request of a stage at once: a spending limit could not stop it in time
        raise JobConfigError("[budget] dollars, tokens and features cannot hold with batch = true (every request "
                             "goes out at once): bound the run with [job] features instead, or minutes")
    return JobConfig(**job, sampler=cfg, limits=limits, budget=budget, text=text)


def load_config(path: str | Path) -> JobConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise JobConfigError(f"cannot read job file {p}: {e.strerror or e}") from None
    return parse_config(text, str(p))
