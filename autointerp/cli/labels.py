"""`autointerp labels`, `show` and `cost`: read the labels, one feature in full, and what the LLM calls cost."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from ..errors import UsageError
from ..score import known_scorers
from .common import (
    CandidatesOpt,
    DictOpt,
    JsonOpt,
    LimitOpt,
    StoreOpt,
    check_choice,
    check_limit,
    emit_json,
    handle_errors,
    opened,
    safe,
)
from .features import render_window
from .label import fmt, fmt_ci

STATUSES = ("ok", "failed", "skipped")
BY = ("value", "lower")


@handle_errors
def labels(store: StoreOpt, dictionary: DictOpt = None,
           sort: Annotated[str | None, typer.Option(help="feature, or a scorer (e.g. simulation): highest first.")] = None,
           ascending: Annotated[bool, typer.Option(help="Lowest scores first.")] = False,
           by: Annotated[str, typer.Option(help="With --sort SCORER: value, or lower (the lower end of the grade's "
                                                "95% interval: a grade on little evidence ranks below an equal "
                                                "grade on much).")] = "value",
           limit: LimitOpt = None,
           status: Annotated[str, typer.Option(help="ok: labels with their grades; failed or skipped: the features "
                                                    "that have none, with the reason.")] = "ok",
           candidates: CandidatesOpt = False,
           all_seeds: Annotated[bool, typer.Option("--all-seeds", help="Each feature's chosen label of every run "
                                                   "key (explainer, prompt, sampler, seed), not only its current "
                                                   "one.")] = False,
           as_json: JsonOpt = False) -> None:
    """Labels with their grades, one row per feature: its current label (the newest chosen one, as the
    browser shows it); --all-seeds or --candidates list the others. The run column says which run wrote
    each row (`autointerp job list`). Or (--status failed|skipped) the features without one and why."""
    check_limit(limit)
    check_choice(status, STATUSES, "--status")
    check_choice(by, BY, "--by")
    if status != "ok" and (sort is not None or by != "value" or candidates or ascending or all_seeds):
        raise UsageError(f"--status {status} lists features without a label, in feature order: it takes no --sort, "
                         "--by, --ascending, --candidates or --all-seeds")
    with opened(store, read_only=True) as s:
        d = s.dictionary(dictionary)
        if status != "ok":
            rows = s.labels.label_outcomes(d.dictionary_id, status, limit)
            if as_json:
                emit_json({"dictionary": d.name, "status": status, "features": rows})
                return
            typer.echo("feature\texplainer\tseed\treason")
            for r in rows:
                typer.echo(f"{r['feature_id']}\t{safe(r['explainer'])}\t{r['seed']}\t{safe(r['reason'])}")
            return
        check_choice(sort, ["feature", *dict.fromkeys([*known_scorers(), *s.labels.scorer_names(d.dictionary_id)])], "--sort")
        if by != "value" and sort in (None, "feature"):
            raise UsageError("--by lower ranks by a scorer: give --sort SCORER")
        rows = s.labels.find(d.dictionary_id, sort_by=None if sort == "feature" else sort, descending=not ascending,
                        limit=limit, candidates=candidates, by=by, current=not (candidates or all_seeds))
    if as_json:
        emit_json({"dictionary": d.name, "labels": rows})
        return
    names = sorted({k for r in rows for k in r["scores"]})
    typer.echo("feature\t" + "".join(f"{n}\t{n} 95%\t" for n in names) + "run\texplanation")
    for r in rows:
        cells = [(fmt(g.get("value")), grade_ci(g)) for g in (r["scores"].get(n, {}) for n in names)]
        typer.echo(f"{r['feature_id']}\t" + "".join(f"{v}\t{c}\t" for v, c in cells) + f"{run_of(r)}\t"
                   + safe(r["explanation"]))


def run_of(r: dict) -> str:
    """Which run wrote a label: its run id, "imported" for one brought in from elsewhere, "-" when unknown
    (labels from before run ids were kept)."""
    return r["run_id"] or ("imported" if r.get("imported") else "-")


def grade_ci(g: dict) -> str:
    """A grade's interval as "[0.712, 0.881]"; an imported grade is marked, and one without an interval says so."""
    if not g.get("imported"):
        return fmt_ci(g.get("ci"))
    return f"{fmt_ci(g['ci'])} (imported)" if g.get("ci") else "imported: no interval"


@handle_errors
def show(store: StoreOpt, feature: Annotated[int, typer.Option(help="Feature id.")], dictionary: DictOpt = None,
         windows: Annotated[int, typer.Option(help="Top windows to print (0: none).")] = 5,
         as_json: JsonOpt = False) -> None:
    """One feature in full: statistics, its labels with every grade (and the evidence each rests on),
    provenance, and its top windows with the firing tokens highlighted."""
    if windows < 0:
        raise UsageError(f"--windows must be 0 or more, not {windows}")
    from ..score import MEASURES
    from ..workspace import FeatureView

    with opened(store, read_only=True) as s:
        view = FeatureView.read(s, s.dictionary(dictionary), feature)
    if as_json:
        emit_json(view.to_json())
        return
    d, stats, rows, outcomes, sample, outputs = (view.dictionary, view.stats, view.labels, view.outcomes, view.sample,
                                                 view.outputs)
    mx = "-" if stats.max_value is None else f"{stats.max_value:.4g}"
    typer.echo(f"feature {feature} of {safe(d.name)} ({safe(d.model)} @ {safe(d.hook)}): fires on "
               f"{stats.n_firing:,} tokens in "
               f"{stats.n_contexts:,} contexts (density {stats.density:.3g}), max {mx}")
    if not rows:
        typer.echo("no label" + "".join(f"; {o['status']}: {safe(o['reason'])}" for o in outcomes))
    for r in rows:
        mark = "label" if r["chosen"] else "candidate"
        typer.echo(f"\n{mark}: {safe(r['explanation'])}")
        typer.echo(f"  by {safe(r['explainer'])} (prompt {r['prompt_hash']}), sampler {r['sampler_hash']}, seed {r['seed']}, "
                   f"{r['created_at'][:19]}" + (f", run {r['run_id']}" if r.get("run_id") else ""))
        for origin in ("imported", "carried"):
            if r.get(origin):
                typer.echo(f"  {origin} from {safe(r[origin])}")
        grades = [*sorted(r["scores"].items()), *sorted(r.get("imported_scores", {}).items())]
        for name, g in grades:
            det = g["details"]
            ev = ", ".join(f"{k[2:]} {det[k]}" for k in ("n_activating", "n_nonfiring", "n_correct", "n_fuzzed", "n_questions",
                                                            "n_tokens") if k in det)
            ci = fmt_ci(g.get("ci")) if g.get("ci") else ("(no interval)" if g.get("imported") else "")
            typer.echo(f"  {name:<11}{fmt(g['value']):>7} {ci:<17}"
                       f"{g['status']}" + (f" ({ev})" if ev else "")
                       + (f": {safe(g['reason'])}" if g["reason"] else "") + f"  [{g['version']}]"
                       + (f"  imported from {safe(g['imported'])}" if g.get("imported") else "")
                       + (f"  run {g['run_id']}" if g.get("run_id") and not g.get("imported") else ""))
    named = sorted({n for r in rows for n in (*r["scores"], *r.get("imported_scores", {}))} & set(MEASURES))
    if named:
        typer.echo("\nwhat the grades measure:")
        for n in named:
            typer.echo(f"  {n}: {MEASURES[n]}")
    if outputs:
        typer.echo("\noutput (logit lens of its direction):")
        for name, pairs in (("promotes", outputs.promoted), ("suppresses", outputs.suppressed)):
            typer.echo(f"  {name:<11}" + "  ".join(f"{safe(json.dumps(t, ensure_ascii=False))} {v:.3g}" for t, v in pairs))
    top = [w for w in sample.explain if w.kind == "top"][:windows]
    if top:
        color = sys.stdout.isatty()
        vmax = max(w.peak for w in top)
        typer.echo(f"\ntop {len(top)} windows (firing tokens {'shaded' if color else 'in <<>>'}):")
        for w in top:
            typer.echo(f"  [{w.peak:7.3f}] {render_window(w, vmax, color)}")


@handle_errors
def cost(store: StoreOpt, run: Annotated[str | None, typer.Option(help="One run id (default: every run).")] = None,
         as_json: JsonOpt = False) -> None:
    """LLM calls, tokens and dollars per run, provider, model and purpose (cache hits cost nothing; calls to a
    model with no price are counted as unpriced, never as $0)."""
    with opened(store, read_only=True) as s:
        rows = s.ledger.cost_summary(run)
        known = run is not None and not rows and (s.ledger.has_run(run) or bool(s.labels.run_dictionaries(run)))
    if run is not None and not rows:
        if not known:
            raise UsageError(f"--run {run!r}: no such run in the store (`autointerp job list` lists every run)")
        if as_json:
            emit_json({"runs": [], "total_usd": 0.0, "unpriced_calls": 0, "calls": 0})
        else:  # offline methods: nothing was called, nothing is owed
            typer.echo(f"run {run} made no LLM calls (offline methods): $0")
        return
    unpriced = sum(r["unpriced_calls"] for r in rows)
    if as_json:
        emit_json({"runs": rows, "total_usd": round(sum(r["cost_usd"] for r in rows), 6), "unpriced_calls": unpriced})
        return
    typer.echo("run\tprovider\tmodel\tpurpose\tcalls\tcached\terrors\tinput\toutput\tcache_read\tusd")
    for r in rows:
        usd = f"{r['cost_usd']:.4f}" if not r["unpriced_calls"] else \
            ("unpriced" if r["unpriced_calls"] == r["calls"] else f"{r['cost_usd']:.4f} + {r['unpriced_calls']} unpriced")
        typer.echo(f"{r['run_id']}\t{r['provider']}\t{r['model']}\t{r['purpose']}\t{r['calls']}\t{r['cached_calls']}\t"
                   f"{r['errors']}\t{r['input_tokens']}\t{r['output_tokens']}\t{r['cache_read_tokens']}\t{usd}")
    typer.echo(f"total ${sum(r['cost_usd'] for r in rows):.4f}" +
               (f" + {unpriced} unpriced calls (give their models a price: --prices, or [prices] in a job file)"
                if unpriced else ""))
