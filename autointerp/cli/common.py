"""Shared CLI plumbing: error handling, JSON output, option types and the checks every option value gets
before any SQL runs (limits, sort keys, feature lists, store paths, sampler options)."""

from __future__ import annotations

import errno
import functools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from ..errors import AutointerpError, StoreError, UsageError
from ..records import SamplerConfig

StoreOpt = Annotated[Path, typer.Option("--store", envvar="AUTOINTERP_STORE", show_envvar=True,
                                        help="Path of the DuckDB store file.")]
DictOpt = Annotated[str | None, typer.Option("--dictionary", help="Dictionary name (default: the store's only one).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")]
CandidatesOpt = Annotated[bool, typer.Option("--candidates", help="Every best-of-k candidate, not only the chosen labels.")]
DeviceOpt = Annotated[str, typer.Option(help="Where the bundled all-MiniLM-L6-v2 encoder runs: auto (CUDA when "
                                             "present), cpu, cuda, cuda:N or mps.")]
LimitOpt = Annotated[int | None, typer.Option(help="Print at most this many (a positive number).")]
FeaturesOpt = Annotated[str | None, typer.Option(help="Feature ids, e.g. 0-99,123 (default: all).")]


def handle_errors(fn):
    """Turn autointerp's typed errors into a one-line message on stderr and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AutointerpError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            from ..store.db import disk_full

            err = disk_full(e.filename)
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper


def emit_json(doc) -> None:
    typer.echo(json.dumps(doc, default=_default))


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROL = {c: _ESCAPES.get(chr(c), f"\\x{c:02x}") for c in (*range(0x20), *range(0x7f, 0xa0))}


def safe(text) -> str:
    """`text` for a terminal: every C0 and C1 control character (ESC, BEL, CSI, newline, tab...) shown as an
    escape (`\\x1b`, `\\n`, `\\t`), ordinary unicode kept. A label or token, imported or written by an LLM,
    is data: raw, an escape sequence in it could retitle, clear or rewrite the user's terminal."""
    return str(text).translate(_CONTROL)


def _default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def encoder_device(device: str) -> None:
    """Point the bundled encoder at `device` (an unknown or absent device: one line, exit 5)."""
    from ..embed import use_device

    use_device(device)


def show_progress(as_json: bool) -> bool:
    """Progress goes to stderr (a bar on a terminal, a status line every ~10 s otherwise), except with --json."""
    return not as_json


# -- checks at the edge ----------------------------------------------------------------------------

def check_limit(limit: int | None, name: str = "--limit") -> int | None:
    if limit is not None and limit < 1:
        raise UsageError(f"{name} must be a positive number, not {limit}")
    return limit


def check_choice(value: str | None, choices, name: str) -> str | None:
    """One rule for sort keys and other enumerations: the value must be one of `choices`."""
    if value is not None and value not in choices:
        raise UsageError(f"{name} {value!r} is not one of: {', '.join(choices)}")
    return value


def check_features(spec: str | None) -> str | None:
    """A --features list checked at the edge (malformed, reversed: a usage error); ids are made against the
    dictionary's width later (pipeline.parse_features)."""
    from ..pipeline import parse_ranges  # the pipeline loads torch: not on every command's start

    if spec is not None:
        parse_ranges(spec)
    return spec


@contextmanager
def opened(path: Path, *, read_only: bool = False, create: bool = False) -> Iterator:
    """The store at `path`. Without `create`, a missing file is an error (a typo must not make an empty
    store). With `create`, a store file this command made is removed again if the command fails."""
    from ..store import open_store

    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a store file")
    if not path.exists() and not create:
        raise StoreError(f"no store at {path} (ingest or capture into it first)")
    with removed_unless_done(path):
        s = open_store(path, read_only=read_only)  # made by an earlier autointerp: migrated first
        with s:
            yield s


@contextmanager
def no_space_names(path: Path) -> Iterator[None]:
    """A full disk while writing `path` (an export, its temporary files already removed): one line naming it."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) and "no space left" not in str(e).lower():
            raise
        from ..store.db import disk_full

        raise disk_full(path, "while writing it: nothing was written") from None


@contextmanager
def removed_unless_done(path: Path) -> Iterator[None]:
    """A store file made inside the block (it did not exist before) is removed, with its write-ahead log
    and lock files, if the block fails: a failed first ingest, capture or demo leaves nothing behind."""
    from ..store.gate import lock_files

    path = Path(path)
    new = not path.exists()
    if new and not path.parent.exists():
        raise StoreError(f"cannot create a store at {path}: folder {path.parent} does not exist")
    ok = False
    try:
        yield
        ok = True
    finally:
        if new and not ok:
            for p in (path, Path(f"{path}.wal"), *lock_files(path)):
                if p.exists():
                    os.unlink(p)


# -- sampler options, shared by `sample` and `label` -------------------------------------------------

WindowOpt = Annotated[int, typer.Option(help="Sampler: tokens per window (2..65535).", rich_help_panel="Sampler")]
PeakOpt = Annotated[int | None, typer.Option(help="Sampler: offset of the peak token, 0..window-1 (default 3/4 of the window).",
                                             rich_help_panel="Sampler")]
NTopOpt = Annotated[int, typer.Option(help="Sampler: explain, top windows (with --n-quantile, 0..4096 in all).", rich_help_panel="Sampler")]
NQuantileOpt = Annotated[int, typer.Option(help="Sampler: explain, quantile-stratified windows (with --n-top, 0..4096 in all).",
                                           rich_help_panel="Sampler")]
NScoreOpt = Annotated[int, typer.Option(help="Sampler: score, held-out activating windows (with --n-nonfiring and --n-neighbors, 0..4096 in all).", rich_help_panel="Sampler")]
NNonfiringOpt = Annotated[int, typer.Option(help="Sampler: score, random non-firing windows (see --n-score).",
                                            rich_help_panel="Sampler")]
NNeighborsOpt = Annotated[int, typer.Option(help="Sampler: score, hard negatives from neighbouring features (see --n-score).",
                                            rich_help_panel="Sampler")]
NQuantilesOpt = Annotated[int, typer.Option(help="Sampler: quantile bins (1..100).", rich_help_panel="Sampler")]
MinWindowsOpt = Annotated[int, typer.Option(help="Sampler: fewer activating windows than this: too rare (2..2^31-1).",
                                            rich_help_panel="Sampler")]
SeedOpt = Annotated[int, typer.Option(help="Sampler seed, a 64-bit integer (the windows, and so the held-out set, depend on it).")]


def sampler_config(window: int, peak_offset: int | None, n_top: int, n_quantile: int, n_score: int,
                   n_nonfiring: int, n_neighbors: int, n_quantiles: int, min_windows: int) -> SamplerConfig:
    """The sampler options of `sample` and `label` -> a SamplerConfig (bad values: UsageError, exit 2)."""
    return SamplerConfig.from_options(window=window, peak_offset=peak_offset, n_top=n_top, n_quantile=n_quantile,
                                      n_score=n_score, n_nonfiring=n_nonfiring, n_neighbors=n_neighbors,
                                      n_quantiles=n_quantiles, min_windows=min_windows)


MinEvidenceOpt = Annotated[int, typer.Option(help="Windows of each class (activating, non-firing) a classification "
                                                  "grade (embedding, detection, fuzzing) needs, and intruder "
                                                  "questions an intruder grade needs; fewer: undefined (1..4096).",
                                             rich_help_panel="Scoring")]
SimulatorOpt = Annotated[str, typer.Option(help="LLM simulation: simulate_json (a number for every token), "
                                                "simulate_sparse (only the tokens predicted to fire: several times "
                                                "fewer output tokens), simulate_prompt (all at once from the "
                                                "prompt's logprobs; compat servers with echo + logprobs), or a "
                                                "template path.", rich_help_panel="Scoring")]
IntruderKOpt = Annotated[int, typer.Option(help="Intruder: activating windows per question (chance 1/(k+1)), 2..9.",
                                           rich_help_panel="Scoring")]
AdaptiveOpt = Annotated[float | None, typer.Option(help="Adaptive window budget: judge held-out windows in rounds "
                                                        "of 20 until the grade's 95% interval half-width is at most "
                                                        "this (e.g. 0.05; between 0 and 1).", rich_help_panel="Scoring")]
LLMWindowsOpt = Annotated[int, typer.Option(help="LLM simulation, detection and fuzzing: judge at most this many "
                                                "held-out windows (2..4096), half activating and half non-firing; "
                                                "0: every held-out window.", rich_help_panel="Scoring")]
AdaptiveCapOpt = Annotated[int | None, typer.Option(help="Adaptive window budget: at most this many windows (2..4096).",
                                                    rich_help_panel="Scoring")]


def scoring_options(min_evidence: int, simulator: str, intruder_k: int, adaptive: float | None,
                    adaptive_cap: int | None, llm_windows: int):
    """The scoring options of `label` and `score` -> a ScoringOptions (bad values: UsageError, exit 2)."""
    from ..score.base import AdaptiveBudget, ScoringOptions
    from ..simulate import check_simulator

    if adaptive_cap is not None and adaptive is None:
        raise UsageError("--adaptive-cap needs --adaptive TARGET")
    if simulator != ScoringOptions.simulator:
        check_simulator(simulator)
    return ScoringOptions(min_evidence=min_evidence, simulator=simulator, intruder_k=intruder_k,
                          windows=llm_windows or None,
                          adaptive=None if adaptive is None else AdaptiveBudget(target=adaptive, cap=adaptive_cap))
