"""`autointerp label`, `score`, `labels`, `export` and `cost`: label a dictionary, read the labels, write them out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ..errors import LabelError
from ..llm import LLMOptions
from ..pipeline import label as run_label
from ..pipeline import score_text
from ..score import parse_scorers
from ..store import open_store
from .common import CandidatesOpt, DictOpt, JsonOpt, StoreOpt, emit_json, handle_errors, parse_features, show_progress


SCORER_HELP = "Comma-separated: embedding, simulation; with --scorer-model also detection, fuzzing."
LogprobsOpt = Annotated[bool, typer.Option("--logprobs/--no-logprobs", help=(
    "LLM simulation on OpenAI or compatible servers: predict the expected value over top_logprobs (off for "
    "models that refuse logprobs, e.g. reasoning models)."))]


@handle_errors
def label(store: StoreOpt, dictionary: DictOpt = None,
          features: Annotated[str | None, typer.Option(help="Feature ids, e.g. 0-99,123 (default: all).")] = None,
          explainer: Annotated[str, typer.Option(help="offline (no model, no network), anthropic:MODEL, "
                                                     "openai:MODEL, or compat:MODEL with --base-url.")] = "offline",
          scorer: Annotated[str, typer.Option(help=SCORER_HELP)] = "embedding,simulation",
          seed: Annotated[int, typer.Option(help="Sampler seed.")] = 0,
          force: Annotated[bool, typer.Option(help="Redo features that already have a label.")] = False,
          concurrency: Annotated[int, typer.Option(help="Features explained and scored at once (LLM methods; "
                                                        "offline methods run one at a time).")] = 8,
          base_url: Annotated[str | None, typer.Option(help="LLM: server URL (OpenAI-compatible servers, proxies).")] = None,
          api_key_env: Annotated[str | None, typer.Option(help="LLM: environment variable holding the key "
                                                         "(default ANTHROPIC_API_KEY / OPENAI_API_KEY).")] = None,
          prompt: Annotated[str, typer.Option(help="LLM: prompt template, a name in prompts/ or a path.")] = "explain_highlight",
          candidates: Annotated[int, typer.Option(help="LLM: explanations per feature (best-of-k): each graded by "
                                                       "--select-by, the best is the label, all are kept.")] = 1,
          select_by: Annotated[str | None, typer.Option(help="Best-of-k: the (cheap) scorer that picks the label "
                                                        "among candidates (default: the first --scorer).")] = None,
          rpm: Annotated[float, typer.Option(help="LLM: requests per minute.")] = 50,
          itpm: Annotated[float | None, typer.Option(help="LLM: input tokens per minute.")] = None,
          otpm: Annotated[float | None, typer.Option(help="LLM: output tokens per minute.")] = None,
          max_in_flight: Annotated[int, typer.Option(help="LLM: most calls at once (halves on 429).")] = 16,
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
          logprobs: LogprobsOpt = True, as_json: JsonOpt = False) -> None:
    """Label a dictionary's features and grade every label; resumes where an earlier run stopped."""
    with open_store(store) as s:
        d = s.dictionary(dictionary)
        feats = None if features is None else np.array(parse_features(features))
        llm = LLMOptions(base_url=base_url, api_key_env=api_key_env, prompt=prompt, candidates=candidates,
                         requests_per_minute=rpm, input_tokens_per_minute=itpm, output_tokens_per_minute=otpm,
                         max_in_flight=max_in_flight, use_cache=not no_cache, prices=_read_prices(prices),
                         logprobs=logprobs)
        out = run_label(s, d, feats, explainer=explainer, scorers=parse_scorers(scorer), seed=seed, force=force,
                        concurrency=concurrency, progress=show_progress(as_json), llm=llm, batch=batch,
                        batch_poll=batch_poll, batch_wait=batch_wait, scorer_model=scorer_model, select_by=select_by)
    if as_json:
        emit_json(out)
        return
    typer.echo(summary_line(out))


def _read_prices(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        doc = json.loads(path.read_text())
        return {str(k): tuple(float(x) for x in v) for k, v in doc.items() if len(v) == 4}
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise LabelError(f"cannot read prices from {path}: {e}") from None


def summary_line(out: dict) -> str:
    """One line from `pipeline.label`'s summary: outcomes with their kinds, then score statuses."""

    def kinds(k: str) -> str:
        return f" ({', '.join(f'{n} {x}' for x, n in out[k].items())})" if out[k] else ""

    sc = "; ".join(f"{k}: " + ", ".join(f"{n} {st}" for st, n in sorted(v.items())) for k, v in out["scores"].items())
    cost = ""
    if out.get("cost"):
        c = out["cost"]
        cost = (f" | run {out['run_id']}: {sum(r['calls'] for r in c)} calls, {sum(r['cached_calls'] for r in c)} "
                f"cached, {sum(r['input_tokens'] for r in c):,} in / {sum(r['output_tokens'] for r in c):,} out "
                f"tokens, ${sum(r['cost_usd'] for r in c):.4f}")
    b = out.get("batch")
    if b:
        cost += (f" | batch: {b['submitted']} requests submitted, {b['batches']} batches collected "
                 f"({b['replies']} replies, {b['errors']} errors), {b['pending']} still pending"
                 + (": run again to collect them" if b["pending"] else ""))
    return (f"labelled {out['features']} features of {out['dictionary']}: {out['ok']} ok, {out['skipped']} skipped"
            f"{kinds('skipped_kinds')}, {out['failed']} failed{kinds('failed_kinds')}, {out['already_done']} already "
            f"done" + (f" | scores {sc}" if sc else "") + cost)


@handle_errors
def score(store: StoreOpt, feature: Annotated[int, typer.Option(help="Feature id.")],
          explanation: Annotated[str, typer.Option(help="The label to grade, e.g. a human's or another model's.")],
          dictionary: DictOpt = None,
          scorer: Annotated[str, typer.Option(help=SCORER_HELP)] = "embedding",
          seed: Annotated[int, typer.Option(help="Sampler seed (the held-out set depends on it).")] = 0,
          scorer_model: Annotated[str | None, typer.Option(help="LLM scorers: anthropic:MODEL, openai:MODEL or "
                                                           "compat:MODEL.")] = None,
          base_url: Annotated[str | None, typer.Option(help="LLM: server URL.")] = None,
          api_key_env: Annotated[str | None, typer.Option(help="LLM: environment variable holding the key.")] = None,
          logprobs: LogprobsOpt = True, as_json: JsonOpt = False) -> None:
    """Grade any text as the label of one feature, on that feature's held-out windows. Writes no label
    (an LLM scorer still records its calls in the cost ledger and cache)."""
    with open_store(store, read_only=scorer_model is None) as s:
        d = s.dictionary(dictionary)
        sample, scores = score_text(s, d, feature, explanation, scorers=parse_scorers(scorer), seed=seed,
                                    scorer_model=scorer_model,
                                    llm=LLMOptions(base_url=base_url, api_key_env=api_key_env, logprobs=logprobs))
    held = {"activating": sum(w.kind not in ("random", "neighbor") for w in sample.score),
            "nonfiring": sum(w.kind in ("random", "neighbor") for w in sample.score)}
    if as_json:
        emit_json({"dictionary": d.name, "feature": feature, "explanation": explanation, "held_out": held,
                   "sampler_hash": sample.config.hash, "seed": seed,
                   "scores": {x.scorer: {"value": x.value, "status": x.status, "reason": x.reason,
                                         "version": x.scorer_version, "details": x.details} for x in scores}})
        return
    typer.echo(f"feature {feature} of {d.name}: {held['activating']} activating and {held['nonfiring']} "
               f"non-firing held-out windows")
    for x in scores:
        typer.echo(f"{x.scorer}\t{_fmt(x.value)}\t{x.status}" + (f"\t{x.reason}" if x.reason else ""))


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


@handle_errors
def labels(store: StoreOpt, dictionary: DictOpt = None,
           sort: Annotated[str | None, typer.Option(help="Sort by this scorer's value (e.g. simulation).")] = None,
           ascending: Annotated[bool, typer.Option(help="Lowest scores first.")] = False,
           limit: Annotated[int | None, typer.Option(help="Print at most this many.")] = None,
           candidates: CandidatesOpt = False, as_json: JsonOpt = False) -> None:
    """Labels with their scores."""
    with open_store(store, read_only=True) as s:
        d = s.dictionary(dictionary)
        rows = s.labels(d.dictionary_id, sort_by=sort, descending=not ascending, limit=limit, candidates=candidates)
    if as_json:
        emit_json({"dictionary": d.name, "labels": rows})
        return
    names = sorted({k for r in rows for k in r["scores"]})
    typer.echo("feature\t" + "\t".join(names) + "\texplanation")
    for r in rows:
        typer.echo(f"{r['feature_id']}\t" + "\t".join(_fmt(r["scores"].get(n, {}).get("value")) for n in names)
                   + f"\t{r['explanation']}")


@handle_errors
def cost(store: StoreOpt, run: Annotated[str | None, typer.Option(help="One run id (default: every run).")] = None,
         as_json: JsonOpt = False) -> None:
    """LLM calls, tokens and dollars per run, provider, model and purpose (cache hits cost nothing)."""
    with open_store(store, read_only=True) as s:
        rows = s.cost_summary(run)
    if as_json:
        emit_json({"runs": rows, "total_usd": round(sum(r["cost_usd"] for r in rows), 6)})
        return
    typer.echo("run\tprovider\tmodel\tpurpose\tcalls\tcached\terrors\tinput\toutput\tcache_read\tusd")
    for r in rows:
        typer.echo(f"{r['run_id']}\t{r['provider']}\t{r['model']}\t{r['purpose']}\t{r['calls']}\t{r['cached_calls']}\t"
                   f"{r['errors']}\t{r['input_tokens']}\t{r['output_tokens']}\t{r['cache_read_tokens']}\t"
                   f"{r['cost_usd']:.4f}")
    typer.echo(f"total ${sum(r['cost_usd'] for r in rows):.4f}")
