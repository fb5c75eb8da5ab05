"""The job file: what to label, how, and within what budget.

    [job]
    dictionary = "gpt2/6-res"            # default: the store's only dictionary
    features = "0-16383"                 # default: all
    explainer = "anthropic:claude-haiku-4-5"   # or "offline", "openai:MODEL", "compat:MODEL"
    scorers = ["detection", "simulation"]
    scorer_model = "anthropic:claude-haiku-4-5"
    prompt = "explain_highlight"
    candidates = 1
    output_tokens = false                # show the LLM explainer each feature's logit-lens tokens
    select_by = "detection"              # best-of-k: the scorer that picks among candidates
    seed = 0
    concurrency = 8
    batch = false                        # the providers' batch APIs (half price)
    carry_from = "sae-v1"                # carry labels from a matched dictionary (see [carry])

    [sampler]                            # SamplerConfig fields (window, n_top, ...), as `sample` takes them

    [scoring]                            # how every scorer grades (score/base.py ScoringOptions):
    min_evidence = 10                    # windows of each class a classification grade needs
    simulator = "simulate_sparse"        # the LLM simulator's prompt (default simulate_json)
    intruder_k = 4                       # activating windows per intruder question
    windows = 40                         # LLM simulation, detection, fuzzing: held-out windows judged (0: all)
    n_boot = 1000                        # bootstrap replicates of each 95% interval
    adaptive_target = 0.05               # judge windows in rounds until the interval's half-width is this
    adaptive_start = 20                  #   (optional, with adaptive_step and adaptive_cap)

    [carry]                              # with carry_from (pipeline CarryOptions): min_similarity = 0.8,
                                         # method = "coactivation" | "decoder", min_score, margin = 0.1

    [limits]                             # the provider: rpm, itpm, otpm, max_in_flight, base_url, api_key_env,
                                         # attempts, timeout
    [prices]                             # "model prefix" = [input, output, cache read, cache write] $ per Mtok
    "my-local-model" = [0, 0, 0, 0]

    [budget]                             # any of: dollars, tokens, features, minutes

The file becomes a `pipeline.LabelRun` (the same object `autointerp label` builds). A dollars budget
over a model with no price is an error: the budget could never stop the run.

Unknown sections or keys, and values of the wrong type or beyond what the store and sampler hold (the
same bounds as the CLI's options: records.SAMPLER_LIMITS), are errors that name them: a typo must not
silently run the default. A file that is not UTF-8 text (a binary file) is one such error too.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ..errors import AutointerpError
from ..llm import LLMOptions
from ..llm.prices import is_priced, parse_prices
from ..pipeline import BatchOptions, Budget, CarryOptions, LabelRun, parse_ranges
from ..records import SAMPLER_OPTION_FIELDS, SamplerConfig
from ..score.base import AdaptiveBudget, ScoringOptions
from ..simulate import check_simulator


class JobConfigError(AutointerpError):
    """The job file cannot be used; nothing ran."""

    exit_code = 20


@dataclass(frozen=True)
class JobConfig:
    """A job file: the dictionary, the run (a LabelRun), and the file's text (kept in the ledger)."""

    dictionary: str | None
    run: LabelRun
    text: str = ""

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def with_run_id(self, run_id: str, hooks=None) -> LabelRun:
        """The run with its LLM calls under `run_id` in the cost ledger (and a Ray worker's hooks)."""
        llm = replace(self.run.llm, run_id=run_id, hooks=hooks if hooks is not None else self.run.llm.hooks)
        return replace(self.run, llm=llm)


JOB_KEYS = {"dictionary": str, "features": str, "explainer": str, "scorers": list, "scorer_model": str, "prompt": str,
            "candidates": int, "output_tokens": bool, "select_by": str, "seed": int, "concurrency": int, "batch": bool,
            "min_evidence": int, "carry_from": str}  # min_evidence: also [scoring]'s (older job files)
CARRY_KEYS = {"min_similarity": (int, float), "method": str, "min_score": (int, float), "margin": (int, float)}
SCORING_KEYS = {"min_evidence": int, "simulator": str, "intruder_k": int, "n_boot": int, "windows_per_call": int,
                "windows": int,
                "adaptive_target": (int, float), "adaptive_start": int, "adaptive_step": int, "adaptive_cap": int}
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
    unknown = set(doc) - {"job", "sampler", "scoring", "carry", "limits", "prices", "budget"}
    if unknown:
        raise JobConfigError(f"{source}: unknown section(s) {', '.join(sorted(unknown))}; "
                             "known: job, sampler, scoring, carry, limits, prices, budget")
    job = _check("job", doc.get("job", {}), JOB_KEYS)
    if "scorers" in job and not all(isinstance(x, str) for x in job["scorers"]):
        raise JobConfigError("[job] scorers must be a list of names")
    sampler_keys = {f.name: int for f in fields(SamplerConfig)} | {k: int for k in SAMPLER_OPTION_FIELDS}
    sampler = _check("sampler", doc.get("sampler", {}), sampler_keys)
    limits = _check("limits", doc.get("limits", {}), LIMIT_KEYS)
    scoring = scoring_options(_check("scoring", doc.get("scoring", {}), SCORING_KEYS), job)
    budget = _check("budget", doc.get("budget", {}), BUDGET_KEYS)
    carry_keys = _check("carry", doc.get("carry", {}), CARRY_KEYS)
    if carry_keys and "carry_from" not in job:
        raise JobConfigError("[carry] needs [job] carry_from (the dictionary to carry labels from)")
    try:
        carry = CarryOptions(source=job.get("carry_from"), **carry_keys)
    except AutointerpError as e:
        raise JobConfigError(f"[carry] {e}") from None
    for k, v in budget.items():
        if v < 0:
            raise JobConfigError(f"[budget] {k} must be >= 0")
    prices = parse_prices(doc.get("prices", {}), "[prices]", JobConfigError)
    try:
        both = [f"{k}/{SAMPLER_OPTION_FIELDS[k]}" for k in sampler if SAMPLER_OPTION_FIELDS.get(k) in sampler]
        if both:
            raise JobConfigError(f"[sampler] gives {', '.join(both)}: one name for each option")
        cfg = SamplerConfig.from_options(**sampler)
    except AutointerpError as e:
        raise JobConfigError(f"[sampler] {e}") from None
    if job.get("batch") and set(budget) & {"dollars", "tokens", "features"}:
        # a batch run submits every request of a stage at once: a spending limit could not stop it in time
        raise JobConfigError("[budget] dollars, tokens and features cannot hold with batch = true (every request "
                             "goes out at once): bound the run with [job] features instead, or minutes")
    # only what the file gives: the defaults (rate limits included) live in LLMOptions alone
    names = {"rpm": "requests_per_minute", "itpm": "input_tokens_per_minute", "otpm": "output_tokens_per_minute"}
    try:
        llm = LLMOptions(**{names.get(k, k): v for k, v in limits.items()},
                         **{k: job[k] for k in ("prompt", "candidates") if k in job}, prices=prices,
                         outputs=job.get("output_tokens", False))
    except AutointerpError as e:  # the CLI's flag names, said as the file's keys
        msg = str(e)
        for flag, key in (("--rpm", "rpm"), ("--itpm", "itpm"), ("--otpm", "otpm"), ("--timeout", "timeout"),
                          ("--max-in-flight", "max_in_flight"), ("--base-url", "base_url")):
            msg = msg.replace(flag, f"[limits] {key}")
        raise JobConfigError(msg.replace("--candidates", "[job] candidates")) from None
    spend = Budget(dollars=budget.get("dollars"), tokens=budget.get("tokens"), features=budget.get("features"),
                   seconds=None if budget.get("minutes") is None else 60.0 * budget["minutes"])
    try:
        run = LabelRun(explainer=job.get("explainer", "offline"),
                       scorers=tuple(job.get("scorers", LabelRun.scorers)), scorer_model=job.get("scorer_model"),
                       select_by=job.get("select_by"), sampler=cfg, seed=job.get("seed", 0),
                       features=job.get("features"), concurrency=job.get("concurrency", 8), llm=llm,
                       batch=BatchOptions(enabled=job.get("batch", False),
                                          wait=None if budget.get("minutes") is None else 60.0 * budget["minutes"]),
                       budget=spend, scoring=scoring, carry=carry)
        if isinstance(run.features, str):
            parse_ranges(run.features)  # the spec parses (ranges are checked against the width at run time)
    except AutointerpError as e:
        raise JobConfigError(f"[job] {e}") from None
    if spend.dollars is not None:
        unpriced = unpriced_models(run)
        if unpriced:
            raise JobConfigError(f"[budget] dollars cannot hold: {', '.join(unpriced)} has no price; give it one in "
                                 f"[prices] (\"{unpriced[0].partition(':')[2]}\" = [input, output, cache read, "
                                 "cache write] $ per Mtok)")
    return JobConfig(dictionary=job.get("dictionary"), run=run, text=text)


def scoring_options(got: dict, job: dict) -> ScoringOptions:
    """[scoring] as ScoringOptions; adaptive_* keys make an AdaptiveBudget (adaptive_target is needed)."""
    if "min_evidence" in job:
        if "min_evidence" in got:
            raise JobConfigError("min_evidence is given in both [job] and [scoring]: keep the one in [scoring]")
        got = {**got, "min_evidence": job["min_evidence"]}
    got = {**got, **({"windows": None} if got.get("windows") == 0 else {})}  # 0: every held-out window
    adaptive = {k.removeprefix("adaptive_"): got.pop(k) for k in list(got) if k.startswith("adaptive_")}
    try:
        if adaptive and "target" not in adaptive:
            raise JobConfigError("[scoring] adaptive_start, adaptive_step and adaptive_cap need adaptive_target")
        if "simulator" in got:
            check_simulator(got["simulator"])
        return ScoringOptions(**got, adaptive=AdaptiveBudget(**adaptive) if adaptive else None)
    except JobConfigError:
        raise
    except AutointerpError as e:
        raise JobConfigError(f"[scoring] {e}") from None


def unpriced_models(run: LabelRun) -> list[str]:
    """The LLM models of a run (explainer, scorer model) that have no price."""
    models = [m for m in (run.explainer, run.scorer_model) if isinstance(m, str) and ":" in m]
    return sorted({m for m in models if not is_priced(m, run.llm.prices)})


def load_config(path: str | Path) -> JobConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise JobConfigError(f"cannot read job file {p}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:  # a binary file, or text in another encoding
        raise JobConfigError(f"job file {p} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}): "
                             "a job file is TOML") from None
    return parse_config(text, str(p))
