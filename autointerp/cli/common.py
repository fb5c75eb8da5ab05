"""Shared CLI plumbing: error handling, JSON output, option types, feature-list parsing."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import AutointerpError

StoreOpt = Annotated[Path, typer.Option("--store", help="Path of the DuckDB store file.")]
DictOpt = Annotated[str | None, typer.Option("--dictionary", help="Dictionary name (default: the store's only one).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")]
CandidatesOpt = Annotated[bool, typer.Option("--candidates", help="Every best-of-k candidate, not only the chosen labels.")]


def handle_errors(fn):
    """Turn autointerp's typed errors into a one-line message on stderr and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AutointerpError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None

    return wrapper


def emit_json(doc) -> None:
    typer.echo(json.dumps(doc, default=_default))


def _default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def show_progress(as_json: bool) -> bool:
    """Progress bars go to stderr, on a terminal only."""
    return not as_json and sys.stderr.isatty()


def parse_features(spec: str) -> list[int]:
    """"0-99,123" -> [0, 1, ..., 99, 123]."""
    from ..errors import SampleError

    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise SampleError(f"bad feature list {spec!r}: use ids and ranges like 0-99,123") from None
    return out
