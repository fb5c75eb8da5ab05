"""`autointerp label` and `score`: label a dictionary and grade every label; grade any text as a label."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import EXIT, LabelError, UsageError, sigterm_as_interrupt
from ..llm import LLMOptions
from ..llm.prices import parse_prices
from ..pipeline import MIN_EVIDENCE, BatchOptions, CarryOptions, LabelRun, RunSummary, score_text
from ..pipeline import label as run_label
from ..score import ScoringOptions, parse_scorers
from .common import (
    DeviceOpt,
    DictOpt,
    FeaturesOpt,
    AdaptiveCapOpt,
    AdaptiveOpt,
    IntruderKOpt,
    JsonOpt,
    LLMWindowsOpt,
    MinEvidenceOpt,
    MinWindowsOpt,
    NNeighborsOpt,
    NNonfiringOpt,
    NQuantileOpt,
    NQuantilesOpt,
    NScoreOpt,
    NTopOpt,
    PeakOpt,
    SeedOpt,
    SimulatorOpt,
    StoreOpt,
    WindowOpt,
    emit_json,
    encoder_device,
    handle_errors,
    opened,
    sampler_config,
    scoring_options,
    show_progress,
)

LLM_WINDOWS = ScoringOptions.windows or 0  # the option's 0 is ScoringOptions' None: every held-out window
SCORER_HELP = ("Comma-separated: simulation, intruder, embedding (offline); with --scorer-model, simulation and "
               "intruder run on it, and detection and fuzzing too; or a plugin's scorer (`autointerp plugins`). "
               "embedding is graded only when asked: on planted features it ranks the true label above its near "
               "misses for few of them (`autointerp calibrate`), so it cannot tell a right label from a near miss.")
LogprobsOpt = Annotated[bool, typer.Option("--logprobs/--no-logprobs", help=(
    "LLM simulation on OpenAI or compatible servers: predict the expected value over top_logprobs (off for "
    "models that refuse logprobs, e.g. reasoning models)."))]


@handle_errors
def label(store: StoreOpt, dictionary: DictOpt = None, features: FeaturesOpt = None,
          explainer: Annotated[str, typer.Option(help="offline (no model, no network), anthropic:MODEL, "
                                                     "openai:MODEL, or compat:MODEL with --base-url; imported: "
                                                     "grade the labels `ingest labels` brought in, explain "
                                                     "nothing; or a plugin's explainer or PROVIDER:MODEL "
                                                     "(`autointerp plugins`).")] = "offline",
          scorer: Annotated[str, typer.Option(help=SCORER_HELP)] = "simulation",
          seed: SeedOpt = 0,
          force: Annotated[bool, typer.Option(help="Redo features that already have a label.")] = False,
          concurrency: Annotated[int, typer.Option(help="Features explained and scored at once (LLM methods; "
                                                        "offline methods run one at a time), 1..1024.")] = 8,
          min_evidence: MinEvidenceOpt = MIN_EVIDENCE, simulator: SimulatorOpt = "simulate_json",
          intruder_k: IntruderKOpt = 4, adaptive: AdaptiveOpt = None, adaptive_cap: AdaptiveCapOpt = None,
          llm_windows: LLMWindowsOpt = LLM_WINDOWS,
          base_url: Annotated[str | None, typer.Option(help="LLM: server URL (OpenAI-compatible servers, proxies).")] = None,
          api_key_env: Annotated[str | None, typer.Option(help="LLM: environment variable holding the key "
                                                         "(default ANTHROPIC_API_KEY / OPENAI_API_KEY).")] = None,
          prompt: Annotated[str, typer.Option(help="LLM: prompt template, a name in prompts/ or a path.")] = "explain_highlight",
          candidates: Annotated[int, typer.Option(help="LLM: explanations per feature (best-of-k): each graded by "
                                                       "--select-by, the best is the label, all are kept.")] = 1,
          select_by: Annotated[str | None, typer.Option(help="Best-of-k: the (cheap) scorer that picks the label "
                                                        "among candidates (default: the first --scorer).")] = None,
          output_tokens: Annotated[bool, typer.Option("--output-tokens", help="LLM: show the explainer each feature's "
                                                      "logit-lens tokens (what its output direction promotes and "
                                                      "suppresses; stored by capture on a causal LM).")] = False,
          rpm: Annotated[float | None, typer.Option(help="LLM: requests per minute (default: 50 until the "
                                                         "provider's rate-limit headers give its limit).")] = None,
          itpm: Annotated[float | None, typer.Option(help="LLM: input tokens per minute (default: what the "
                                                         "provider advertises).")] = None,
          otpm: Annotated[float | None, typer.Option(help="LLM: output tokens per minute (default: what the "
                                                         "provider advertises).")] = None,
          max_in_flight: Annotated[int | None, typer.Option(help="LLM: most calls at once (halves on 429; default "
                                                               "16, or 1 on a compat server: raise it to the "
                                                               "server's parallel slots).")] = None,
          timeout: Annotated[float | None, typer.Option(help="LLM: seconds per call before it is retried (default "
                                                           "60; 600 on a compat server, which generates "
                                                           "locally).")] = None,
          no_cache: Annotated[bool, typer.Option("--no-cache", help="LLM: ask again even when a reply is cached.")] = False,
          prices: Annotated[Path | None, typer.Option(help="LLM: JSON {model prefix: [in, out, cache read, "
                                                      "cache write] $ per Mtok}, over the defaults.")] = None,
          scorer_model: Annotated[str | None, typer.Option(help="LLM scorers: anthropic:MODEL, openai:MODEL or "
                                                           "compat:MODEL; simulation, detection and fuzzing run on it.")] = None,
          batch: Annotated[bool, typer.Option("--batch", help="LLM: send requests through the provider's batch API "
                                                              "(half price, slower); rerun to collect.")] = False,
          batch_poll: Annotated[float, typer.Option(help="LLM --batch: seconds between status polls.")] = 30.0,
          batch_wait: Annotated[float | None, typer.Option(help="LLM --batch: stop polling after this many seconds "
                                                           "(default: until every batch has ended).")] = None,
          logprobs: LogprobsOpt = True,
          call_tokens: Annotated[int | None, typer.Option(help="LLM simulation asking for logprobs: prompt + reply "
                                                          "tokens a call may hold, 256..1000000 (default 2048 on a "
                                                          "compat server, whose memory grows ~4 x vocabulary x 4 "
                                                          "bytes a token; none elsewhere).")] = None,
          carry_from: Annotated[str | None, typer.Option(help="Carry labels from this dictionary (the one before a "
                                                         "retraining): a matched feature first gets its partner's "
                                                         "label, graded on its own windows; explained only when "
                                                         "unmatched or graded too low.", rich_help_panel="Carry")] = None,
          min_similarity: Annotated[float, typer.Option(help="Carry: a partner counts when its match similarity is "
                                                        "at least this.", rich_help_panel="Carry")] = 0.8,
          carry_method: Annotated[str, typer.Option(help="Carry: match by coactivation or decoder (computed and "
                                                    "stored first if `match` has not).", rich_help_panel="Carry")]
          = "coactivation",
          carry_min_score: Annotated[float | None, typer.Option(help="Carry: explain anew when the carried label "
                                                                "grades below this (by --select-by or the first "
                                                                "scorer).", rich_help_panel="Carry")] = None,
          carry_margin: Annotated[float, typer.Option(help="Carry: explain anew when the carried label grades more "
                                                     "than this below its partner's own grade.",
                                                     rich_help_panel="Carry")] = 0.1,
          window: WindowOpt = 32, peak_offset: PeakOpt = None, n_top: NTopOpt = 20, n_quantile: NQuantileOpt = 20,
          n_score: NScoreOpt = 50, n_nonfiring: NNonfiringOpt = 50, n_neighbors: NNeighborsOpt = 0,
          n_quantiles: NQuantilesOpt = 10, min_windows: MinWindowsOpt = 10,
          device: DeviceOpt = "auto", as_json: JsonOpt = False) -> None:
    """Label a dictionary's features and grade every label; resumes where an earlier run stopped, and grades
    labels that lack a grade of a scorer given here (no new explanation). Exit 22 if any feature or grade
    failed (the reasons are printed), 23 if interrupted."""
    encoder_device(device)
    llm = LLMOptions(base_url=base_url, api_key_env=api_key_env, prompt=prompt, candidates=candidates,
                     outputs=output_tokens, requests_per_minute=rpm, input_tokens_per_minute=itpm,
                     output_tokens_per_minute=otpm, max_in_flight=max_in_flight, timeout=timeout, use_cache=not no_cache,
                     prices=_read_prices(prices), logprobs=logprobs, call_tokens=call_tokens)
    run = LabelRun(explainer=explainer, scorers=parse_scorers(scorer), scorer_model=scorer_model, select_by=select_by,
                   sampler=sampler_config(window, peak_offset, n_top, n_quantile, n_score, n_nonfiring, n_neighbors,
                                          n_quantiles, min_windows),
                   seed=seed, features=features, concurrency=concurrency, llm=llm,
                   batch=BatchOptions(enabled=batch, poll=batch_poll, wait=batch_wait), force=force,
                   scoring=scoring_options(min_evidence, simulator, intruder_k, adaptive, adaptive_cap, llm_windows),
                   carry=CarryOptions(source=carry_from, min_similarity=min_similarity, method=carry_method,
                                      min_score=carry_min_score, margin=carry_margin))
    summary = RunSummary()
    with opened(store) as s:
        d = s.dictionary(dictionary)
        run.selected(d.width)  # out-of-range ids: an error before anything runs
        try:
            with sigterm_as_interrupt():  # SIGTERM stops like Ctrl-C: what finished is committed, exit 23
                run_label(s, d, run, progress=show_progress(as_json), summary=summary)
        except KeyboardInterrupt:
            typer.echo(f"interrupted: {summary_line(summary)} (what finished is committed; run again to go on)",
                       err=True)
            raise typer.Exit(EXIT["interrupted"]) from None
    if as_json:
        emit_json(summary.to_dict())
    else:
        typer.echo(summary_line(summary))
    if summary.failed or summary.failed_grades:
        typer.echo(f"error: {summary.failed} features and {summary.failed_grades} grades failed; most common:",
                   err=True)
        for reason, n in summary.top_reasons(3):
            typer.echo(f"  {n}x {reason}", err=True)
        typer.echo("  (run again to retry them; `autointerp labels --status failed` lists them)", err=True)
    status, _ = summary.outcome()  # as the run's ledger row says: a budget stop or pending batches first
    if status != "done":
        raise typer.Exit(EXIT[status])


def _read_prices(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LabelError(f"cannot read prices from {path}: {e}") from None
    return parse_prices(doc, f"prices file {path}:", LabelError)


def summary_line(out: RunSummary) -> str:
    """One line from a run's summary: its id, each selected feature's outcome (they add up to the features
    selected), then grade statuses, samples and cost."""
    sc = "; ".join(f"{k}: " + ", ".join(f"{n} {st}" for st, n in sorted(v.items())) for k, v in out.scores.items() if v)
    cost = ""
    if out.cost:
        c = out.cost
        unpriced = sum(r.get("unpriced_calls", 0) for r in c)
        cost = (f" | {sum(r['calls'] for r in c)} calls, {sum(r['cached_calls'] for r in c)} "
                f"cached, {sum(r['input_tokens'] for r in c):,} in / {sum(r['output_tokens'] for r in c):,} out "
                f"tokens, ${sum(r['cost_usd'] for r in c):.4f}" + (f" + {unpriced} unpriced calls" if unpriced else ""))
    b = out.batch
    if b:
        cost += (f" | batch: {b['submitted']} requests submitted, {b['batches']} batches collected "
                 f"({b['replies']} replies, {b['errors']} errors), {b['pending']} still pending"
                 + (": run again to collect them" if b["pending"] else ""))
    samples = ""
    if out.samples_stored or out.samples_not_current:
        samples = f" | samples: {out.samples_stored} read from the store, {out.samples_drawn} drawn"
        if out.samples_not_current:
            samples += (f" ({out.samples_not_current} stored under another sampler config or seed, or before their "
                        "activations changed)")
    run = f"run {out.run_id}: " if out.run_id else ""
    grades = f" | grades {sc}" if sc else ""
    return f"{run}{out.outcome_words()}{grades}{samples}{cost}"


@handle_errors
def score(store: StoreOpt, feature: Annotated[int, typer.Option(help="Feature id.")],
          explanation: Annotated[str, typer.Option(help="The label to grade, e.g. a human's or another model's.")],
          dictionary: DictOpt = None,
          scorer: Annotated[str, typer.Option(help=SCORER_HELP)] = "simulation",
          seed: SeedOpt = 0,
          scorer_model: Annotated[str | None, typer.Option(help="LLM scorers: anthropic:MODEL, openai:MODEL or "
                                                           "compat:MODEL.")] = None,
          base_url: Annotated[str | None, typer.Option(help="LLM: server URL.")] = None,
          api_key_env: Annotated[str | None, typer.Option(help="LLM: environment variable holding the key.")] = None,
          logprobs: LogprobsOpt = True, min_evidence: MinEvidenceOpt = MIN_EVIDENCE,
          simulator: SimulatorOpt = "simulate_json", intruder_k: IntruderKOpt = 4, adaptive: AdaptiveOpt = None,
          adaptive_cap: AdaptiveCapOpt = None, llm_windows: LLMWindowsOpt = LLM_WINDOWS,
          window: WindowOpt = 32, peak_offset: PeakOpt = None, n_top: NTopOpt = 20, n_quantile: NQuantileOpt = 20,
          n_score: NScoreOpt = 50, n_nonfiring: NNonfiringOpt = 50, n_neighbors: NNeighborsOpt = 0,
          n_quantiles: NQuantilesOpt = 10, min_windows: MinWindowsOpt = 10,
          as_json: JsonOpt = False) -> None:
    """Grade any text as the label of one feature, on that feature's held-out windows. Writes no label
    (an LLM scorer still records its calls in the cost ledger and cache)."""
    run = LabelRun(scorers=parse_scorers(scorer), scorer_model=scorer_model, seed=seed,
                   scoring=scoring_options(min_evidence, simulator, intruder_k, adaptive, adaptive_cap, llm_windows),
                   sampler=sampler_config(window, peak_offset, n_top, n_quantile, n_score, n_nonfiring, n_neighbors,
                                          n_quantiles, min_windows),
                   llm=LLMOptions(base_url=base_url, api_key_env=api_key_env, logprobs=logprobs))
    with opened(store, read_only=scorer_model is None) as s:
        d = s.dictionary(dictionary)
        if not 0 <= feature < d.width:
            raise UsageError(f"feature {feature} is out of range: the dictionary has features 0..{d.width - 1}")
        sample, scores = score_text(s, d, feature, explanation, run)
    held = {"activating": sum(w.kind not in ("random", "neighbor") for w in sample.score),
            "nonfiring": sum(w.kind in ("random", "neighbor") for w in sample.score)}
    if as_json:
        emit_json({"dictionary": d.name, "feature": feature, "explanation": explanation, "held_out": held,
                   "sampler_hash": sample.config.hash, "seed": seed,
                   "scores": {x.scorer: {"value": x.value, "ci": list(x.interval) if x.interval else None,
                                         "n_windows": x.n_windows, "n_tokens": x.n_tokens, "status": x.status,
                                         "reason": x.reason, "version": x.scorer_version, "details": x.details}
                              for x in scores}})
        return
    typer.echo(f"feature {feature} of {d.name}: {held['activating']} activating and {held['nonfiring']} "
               f"non-firing held-out windows")
    for x in scores:
        typer.echo(f"{x.scorer}\t{fmt(x.value)}\t{fmt_ci(x.interval)}\t{x.status}" + (f"\t{x.reason}" if x.reason else ""))


def fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def fmt_ci(ci) -> str:
    """A 95% interval as "[0.712, 0.881]" ("-" when there is none)."""
    return "-" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"
