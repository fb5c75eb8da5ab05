"""`autointerp label`, `labels` and `export`: label a dictionary, read the labels, write them out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ..errors import LabelError
from ..export import write_jsonl
from ..pipeline import label as run_label
from ..pipeline import score_text
from ..score import parse_scorers
from ..store import open_store
from .common import DictOpt, JsonOpt, StoreOpt, emit_json, handle_errors, parse_features, show_progress


@handle_errors
def label(store: StoreOpt, dictionary: DictOpt = None,
          features: Annotated[str | None, typer.Option(help="Feature ids, e.g. 0-99,123 (default: all).")] = None,
          explainer: Annotated[str, typer.Option(help="offline (no model, no network).")] = "offline",
          scorer: Annotated[str, typer.Option(help="Comma-separated: embedding, simulation.")] = "embedding,simulation",
          seed: Annotated[int, typer.Option(help="Sampler seed.")] = 0,
          force: Annotated[bool, typer.Option(help="Redo features that already have a label.")] = False,
          concurrency: Annotated[int, typer.Option(help="Features explained and scored at once (LLM methods; "
                                                        "offline methods run one at a time).")] = 8,
          as_json: JsonOpt = False) -> None:
    """Label a dictionary's features and grade every label; resumes where an earlier run stopped."""
    with open_store(store) as s:
        d = s.dictionary(dictionary)
        feats = None if features is None else np.array(parse_features(features))
        out = run_label(s, d, feats, explainer=explainer, scorers=parse_scorers(scorer),
                        seed=seed, force=force, concurrency=concurrency,
                        progress=show_progress(as_json))
    if as_json:
        emit_json(out)
        return
    typer.echo(summary_line(out))


def summary_line(out: dict) -> str:
    """One line from `pipeline.label`'s summary: outcomes with their kinds, then score statuses."""

    def kinds(k: str) -> str:
        return f" ({', '.join(f'{n} {x}' for x, n in out[k].items())})" if out[k] else ""

    sc = "; ".join(f"{k}: " + ", ".join(f"{n} {st}" for st, n in sorted(v.items())) for k, v in out["scores"].items())
    return (f"labelled {out['features']} features of {out['dictionary']}: {out['ok']} ok, {out['skipped']} skipped"
            f"{kinds('skipped_kinds')}, {out['failed']} failed{kinds('failed_kinds')}, {out['already_done']} already "
            f"done" + (f" | scores {sc}" if sc else ""))


@handle_errors
def score(store: StoreOpt, feature: Annotated[int, typer.Option(help="Feature id.")],
          explanation: Annotated[str, typer.Option(help="The label to grade, e.g. a human's or another model's.")],
          dictionary: DictOpt = None,
          scorer: Annotated[str, typer.Option(help="Comma-separated: embedding, simulation.")] = "embedding",
          seed: Annotated[int, typer.Option(help="Sampler seed (the held-out set depends on it).")] = 0,
          as_json: JsonOpt = False) -> None:
    """Grade any text as the label of one feature, on that feature's held-out windows. Writes nothing."""
    with open_store(store, read_only=True) as s:
        d = s.dictionary(dictionary)
        sample, scores = score_text(s, d, feature, explanation, scorers=parse_scorers(scorer), seed=seed)
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
           as_json: JsonOpt = False) -> None:
    """Labels with their scores."""
    with open_store(store, read_only=True) as s:
        d = s.dictionary(dictionary)
        rows = s.labels(d.dictionary_id, sort_by=sort, descending=not ascending, limit=limit)
    if as_json:
        emit_json({"dictionary": d.name, "labels": rows})
        return
    names = sorted({k for r in rows for k in r["scores"]})
    typer.echo("feature\t" + "\t".join(names) + "\texplanation")
    for r in rows:
        typer.echo(f"{r['feature_id']}\t" + "\t".join(_fmt(r["scores"].get(n, {}).get("value")) for n in names)
                   + f"\t{r['explanation']}")


@handle_errors
def export(store: StoreOpt, out: Annotated[Path, typer.Option("--out", help="File to write.")],
           format: Annotated[str, typer.Option("--format", help="jsonl")] = "jsonl",
           dictionary: DictOpt = None, as_json: JsonOpt = False) -> None:
    """Write labels, scores and provenance: one JSON line per (feature, explanation)."""
    if format != "jsonl":
        raise LabelError(f"unknown export format {format!r}; available: jsonl")
    with open_store(store, read_only=True) as s:
        n = write_jsonl(s, out, dictionary)
    if as_json:
        emit_json({"out": str(out), "lines": n})
    else:
        typer.echo(f"wrote {n} labels to {out}")
