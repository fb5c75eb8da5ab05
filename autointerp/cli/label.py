"""`autointerp label`, `labels` and `export`: label a dictionary, read the labels, write them out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ..errors import LabelError
from ..pipeline import label as run_label
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
          as_json: JsonOpt = False) -> None:
    """Label a dictionary's features and grade every label; resumes where an earlier run stopped."""
    with open_store(store) as s:
        d = s.dictionary(dictionary)
        feats = None if features is None else np.array(parse_features(features))
        out = run_label(s, d, feats, explainer=explainer, scorers=parse_scorers(scorer),
                        seed=seed, force=force, progress=show_progress(as_json))
    if as_json:
        emit_json(out)
        return
    sc = "; ".join(f"{k}: " + ", ".join(f"{n} {st}" for st, n in sorted(v.items())) for k, v in out["scores"].items())
    typer.echo(f"labelled {out['features']} features of {out['dictionary']}: {out['ok']} ok, {out['skipped']} skipped, "
               f"{out['failed']} failed, {out['already_done']} already done" + (f" | scores {sc}" if sc else ""))


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
        dicts = [s.dictionary(dictionary)] if dictionary else s.dictionaries()
        rows = [r for d in dicts for r in s.labels(d.dictionary_id)]
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({k: r[k] for k in ("feature_id", "dictionary", "explanation", "scores", "explainer",
                                                   "prompt_hash", "sampler", "sampler_hash", "seed", "created_at",
                                                   "evidence")}, ensure_ascii=False) + "\n")
    tmp.replace(out)  # a failed export never leaves half a file
    if as_json:
        emit_json({"out": str(out), "lines": len(rows)})
    else:
        typer.echo(f"wrote {len(rows)} labels to {out}")
