"""`autointerp dictionaries`, `features` and `sample`: read a store and draw samples."""

from __future__ import annotations

import sys
from typing import Annotated

import numpy as np
import typer

from ..errors import SampleError
from ..records import FeatureSample, SamplerConfig, Window
from ..sample import Sampler
from ..store import open_store
from .common import DictOpt, JsonOpt, StoreOpt, emit_json, handle_errors, parse_features, show_progress


@handle_errors
def dictionaries(store: StoreOpt, as_json: JsonOpt = False) -> None:
    """List the store's feature dictionaries."""
    with open_store(store, read_only=True) as s:
        rows = [{"name": d.name, "model": d.model, "hook": d.hook, "width": d.width, "kind": d.kind,
                 "source": d.source, **s.dictionary_summary(d.dictionary_id)} for d in s.dictionaries()]
    if as_json:
        emit_json({"store": str(store), "dictionaries": rows})
        return
    for r in rows:
        typer.echo(f"{r['name']}\t{r['kind']}\t{r['width']} features ({r['dead']} dead)\t{r['nonzeros']:,} nonzeros"
                   f"\t{r['model']} @ {r['hook']}")


@handle_errors
def features(store: StoreOpt, dictionary: DictOpt = None,
             sort: Annotated[str, typer.Option(help="feature | density | max")] = "feature",
             limit: Annotated[int | None, typer.Option(help="Print at most this many features.")] = None,
             as_json: JsonOpt = False) -> None:
    """Per-feature statistics: firing count, density, max, mean, quantile edges."""
    with open_store(store, read_only=True) as s:
        d = s.dictionary(dictionary)
        stats = s.feature_stats(d.dictionary_id, order_by=sort, limit=limit)
        summary = s.dictionary_summary(d.dictionary_id)
    if as_json:
        emit_json({"dictionary": d.name, "summary": summary, "features": [
            {"feature": f.feature, "n_firing": f.n_firing, "n_contexts": f.n_contexts, "density": f.density,
             "max": f.max_value, "mean": f.mean_value, "quantile_edges": list(f.quantile_edges),
             "max_context": f.max_context, "max_position": f.max_position} for f in stats]})
        return
    typer.echo(f"{d.name}: {summary['features']} features, {summary['dead']} dead, {summary['nonzeros']:,} nonzeros")
    typer.echo("feature\tn_firing\tcontexts\tdensity\tmax\tmean")
    for f in stats:
        mx = "-" if f.max_value is None else f"{f.max_value:.4g}"
        mean = "-" if f.mean_value is None else f"{f.mean_value:.4g}"
        typer.echo(f"{f.feature}\t{f.n_firing}\t{f.n_contexts}\t{f.density:.3g}\t{mx}\t{mean}")


def _render(w: Window, vmax: float, color: bool) -> str:
    out = []
    for tok, a in zip(w.tokens, w.activations):
        tok = tok.replace("\n", "\\n")
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
    typer.echo(f"feature {fs.feature} of {fs.dictionary}: {fs.status}" + (f" ({fs.reason})" if fs.reason else ""))
    vmax = max([w.peak for w in fs.explain + fs.score], default=0.0)
    for title, wins in (("explain", fs.explain), ("score", fs.score)):
        typer.echo(f"-- {title}: {len(wins)} windows")
        for w in wins:
            typer.echo(f"[{w.kind:8s} ctx {w.context_id:>6} @{w.start:<4} max {w.peak:7.3f}] {_render(w, vmax, color)}")


@handle_errors
def sample(store: StoreOpt,
           feature: Annotated[int | None, typer.Option(help="Sample this feature and print its windows.")] = None,
           all_: Annotated[bool, typer.Option("--all", help="Sample every live feature into the store.")] = False,
           features: Annotated[str | None, typer.Option(help="With --all: only these, e.g. 0-99,123.")] = None,
           dictionary: DictOpt = None,
           seed: Annotated[int, typer.Option(help="Seed of the draws.")] = 0,
           window: Annotated[int, typer.Option(help="Tokens per window.")] = 32,
           peak_offset: Annotated[int | None, typer.Option(help="Offset of the peak token (default 3/4 of the window).")] = None,
           n_top: Annotated[int, typer.Option(help="Explain: top windows.")] = 20,
           n_quantile: Annotated[int, typer.Option(help="Explain: quantile-stratified windows.")] = 20,
           n_score: Annotated[int, typer.Option(help="Score: held-out activating windows.")] = 50,
           n_nonfiring: Annotated[int, typer.Option(help="Score: random non-firing windows.")] = 50,
           n_neighbors: Annotated[int, typer.Option(help="Score: hard negatives from neighbouring features.")] = 0,
           n_quantiles: Annotated[int, typer.Option(help="Quantile bins.")] = 10,
           min_windows: Annotated[int, typer.Option(help="Fewer activating windows: too rare.")] = 10,
           stored: Annotated[bool, typer.Option("--stored", help="With --feature: show the stored sample.")] = False,
           as_json: JsonOpt = False) -> None:
    """Sample windows to explain and to score a feature, or (--all) every feature into the store."""
    if (feature is None) == (not all_):
        raise SampleError("pass either --feature ID or --all")
    cfg = SamplerConfig(window=window, peak_offset=peak_offset, n_top=n_top, n_quantile_explain=n_quantile,
                        n_score_activating=n_score, n_score_nonfiring=n_nonfiring, n_neighbor_negatives=n_neighbors,
                        n_quantiles=n_quantiles, min_windows=min_windows)
    with open_store(store, read_only=not all_) as s:
        d = s.dictionary(dictionary)
        sampler = Sampler(s, d, cfg, seed)
        if all_:
            feats = None if features is None else np.array(parse_features(features))
            out = sampler.sample_all(feats, progress=show_progress(as_json))
            if as_json:
                emit_json(out)
            else:
                typer.echo(f"sampled {out['features']} features of {d.name}: {out['ok']} ok, {out['too_rare']} too "
                           f"rare, {out['dead']} dead; {out['windows']:,} windows stored")
            return
        fs = sampler.load(feature) if stored else sampler.sample(feature)
        if fs is None:
            raise SampleError(f"no stored sample for feature {feature}: run `autointerp sample --all` first")
    if as_json:
        emit_json(fs.to_json())
    else:
        _print_sample(fs)
