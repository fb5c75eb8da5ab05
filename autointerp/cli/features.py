"""`autointerp dictionaries`, `features` and `sample`: read a store and draw samples."""

from __future__ import annotations

import sys
from typing import Annotated

import numpy as np
import typer

from ..errors import SampleError, UsageError
from ..records import FeatureSample, Window, check_seed
from ..sample import Sampler
from .common import (
    DictOpt,
    FeaturesOpt,
    JsonOpt,
    LimitOpt,
    MinWindowsOpt,
    NNeighborsOpt,
    NNonfiringOpt,
    NQuantileOpt,
    NQuantilesOpt,
    NScoreOpt,
    NTopOpt,
    PeakOpt,
    SeedOpt,
    StoreOpt,
    WindowOpt,
    check_choice,
    check_limit,
    emit_json,
    handle_errors,
    opened,
    check_features,
    safe,
    sampler_config,
    show_progress,
)

FEATURE_SORTS = ("feature", "density", "max")


@handle_errors
def dictionaries(store: StoreOpt, as_json: JsonOpt = False) -> None:
    """List the store's feature dictionaries."""
    with opened(store, read_only=True) as s:
        rows = [{"name": d.name, "model": d.model, "hook": d.hook, "width": d.width, "kind": d.kind,
                 "source": d.source, **s.activations.dictionary_summary(d.dictionary_id)} for d in s.dictionaries()]
    if as_json:
        emit_json({"store": str(store), "dictionaries": rows})
        return
    for r in rows:
        typer.echo(f"{safe(r['name'])}\t{r['kind']}\t{r['width']} features ({r['dead']} dead)\t"
                   f"{r['nonzeros']:,} nonzeros\t{safe(r['model'])} @ {safe(r['hook'])}")


@handle_errors
def features(store: StoreOpt, dictionary: DictOpt = None,
             sort: Annotated[str, typer.Option(help="feature | density | max (the densest or highest first)")] = "feature",
             limit: LimitOpt = None,
             as_json: JsonOpt = False) -> None:
    """Per-feature statistics: firing count, density, max, mean, quantile edges."""
    check_choice(sort, FEATURE_SORTS, "--sort")
    check_limit(limit)
    with opened(store, read_only=True) as s:
        d = s.dictionary(dictionary)
        stats = s.activations.feature_stats(d.dictionary_id, order_by=sort, limit=limit)
        summary = s.activations.dictionary_summary(d.dictionary_id)
    if as_json:
        emit_json({"dictionary": d.name, "summary": summary, "features": [
            {"feature": f.feature, "n_firing": f.n_firing, "n_contexts": f.n_contexts, "density": f.density,
             "max": f.max_value, "mean": f.mean_value, "quantile_edges": list(f.quantile_edges),
             "max_context": f.max_context, "max_position": f.max_position} for f in stats]})
        return
    typer.echo(f"{safe(d.name)}: {summary['features']} features, {summary['dead']} dead, "
               f"{summary['nonzeros']:,} nonzeros")
    typer.echo("feature\tn_firing\tcontexts\tdensity\tmax\tmean")
    for f in stats:
        mx = "-" if f.max_value is None else f"{f.max_value:.4g}"
        mean = "-" if f.mean_value is None else f"{f.mean_value:.4g}"
        typer.echo(f"{f.feature}\t{f.n_firing}\t{f.n_contexts}\t{f.density:.3g}\t{mx}\t{mean}")


def render_window(w: Window, vmax: float, color: bool) -> str:
    out = []
    for tok, a in zip(w.tokens, w.activations):
        tok = safe(tok)  # a token is data: its control characters are shown, never sent to the terminal
        if a <= 0:
            out.append(tok)
        elif color:
            level = min(5, 1 + int(4 * a / vmax)) if vmax > 0 else 5
            out.append(f"\x1b[30;48;5;{[0, 229, 222, 215, 208, 202][level]}m{tok}\x1b[0m")
        else:
            out.append(f"<<{tok}>>")
    return "".join(out)


def _print_sample(fs: FeatureSample) -> None:
    color = sys.stdout.isatty()
    typer.echo(f"feature {fs.feature} of {safe(fs.dictionary)}: {fs.status}"
               + (f" ({safe(fs.reason)})" if fs.reason else ""))
    vmax = max([w.peak for w in fs.explain + fs.score], default=0.0)
    for title, wins in (("explain", fs.explain), ("score", fs.score)):
        typer.echo(f"-- {title}: {len(wins)} windows")
        for w in wins:
            typer.echo(f"[{w.kind:8s} ctx {w.context_id:>6} @{w.start:<4} max {w.peak:7.3f}] {render_window(w, vmax, color)}")


@handle_errors
def sample(store: StoreOpt,
           feature: Annotated[int | None, typer.Option(help="Sample this feature and print its windows.")] = None,
           all_: Annotated[bool, typer.Option("--all", help="Sample every live feature into the store.")] = False,
           features: FeaturesOpt = None,
           dictionary: DictOpt = None,
           seed: SeedOpt = 0,
           window: WindowOpt = 32, peak_offset: PeakOpt = None, n_top: NTopOpt = 20, n_quantile: NQuantileOpt = 20,
           n_score: NScoreOpt = 50, n_nonfiring: NNonfiringOpt = 50, n_neighbors: NNeighborsOpt = 0,
           n_quantiles: NQuantilesOpt = 10, min_windows: MinWindowsOpt = 10,
           stored: Annotated[bool, typer.Option("--stored", help="With --feature: show the stored sample.")] = False,
           as_json: JsonOpt = False) -> None:
    """Sample windows to explain and to score a feature, or (--all) every feature into the store. `label`
    takes the same sampler options, and reads what `sample --all` stored under them (while current)."""
    if (feature is None) == (not all_):
        raise UsageError("pass either --feature ID or --all")
    cfg = sampler_config(window, peak_offset, n_top, n_quantile, n_score, n_nonfiring, n_neighbors, n_quantiles,
                         min_windows)
    check_seed(seed)
    check_features(features)
    with opened(store, read_only=not all_) as s:
        d = s.dictionary(dictionary)
        sampler = Sampler(s, d, cfg, seed)
        if all_:
            feats = None if features is None else _ids(features, d.width)
            out = sampler.sample_all(feats, progress=show_progress(as_json))
            if as_json:
                emit_json(out)
            else:
                typer.echo(f"sampled {out['features']} features of {d.name}: {out['ok']} ok, {out['too_rare']} too "
                           f"rare, {out['dead']} dead; {out['windows']:,} windows stored")
            return
        assert feature is not None  # checked above: without --all, --feature
        fs = sampler.load(feature) if stored else sampler.sample(feature)
        if fs is None:
            raise SampleError(f"no stored sample for feature {feature}: run `autointerp sample --all` first")
    if as_json:
        emit_json(fs.to_json())
    else:
        _print_sample(fs)


def _ids(spec: str, width: int) -> np.ndarray:
    """--features as ids of this dictionary (an id past its width: a bad value, exit 2)."""
    from ..pipeline import parse_features

    return parse_features(spec, width)
