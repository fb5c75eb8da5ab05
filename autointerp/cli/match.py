"""`autointerp match`: pair the features of two dictionaries over one corpus (the old SAE and its retrained
successor), by co-activation and by decoder cosine; the pairs are stored for `label --carry-from` and
`diff --dictionaries`."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import JsonOpt, StoreOpt, emit_json, handle_errors, opened, show_progress


@handle_errors
def match(store: StoreOpt,
          from_: Annotated[str, typer.Option("--from", help="The earlier dictionary (whose labels would carry).")],
          to: Annotated[str, typer.Option("--to", help="The later dictionary: each of its features gets a partner.")],
          method: Annotated[str, typer.Option(help="auto (co-activation, and decoder cosine when both have output "
                                                   "directions), coactivation, or decoder.")] = "auto",
          threshold: Annotated[float, typer.Option(help="Similarity the summary counts as matched.")] = 0.8,
          as_json: JsonOpt = False) -> None:
    """For every feature of --to, its closest feature of --from: by the correlation of their activations over
    the shared corpus (co-activation, computed in bounded memory a range of features at a time) and by the
    cosine of their output directions when both were captured with them. Replaces an earlier match of the
    same pair and method; one transaction (an error or Ctrl-C writes nothing)."""
    from ..match import MatchConfig, match_dictionaries

    config = MatchConfig(method=method, threshold=threshold)
    with opened(store) as s:
        a, b = s.dictionary(from_), s.dictionary(to)
        res = match_dictionaries(s, a, b, config, progress=show_progress(as_json))
    if as_json:
        emit_json(res.to_dict())
        return
    typer.echo(f"match {a.name} -> {b.name}: {res.live:,} of {b.width:,} features of {b.name} fire "
               f"({a.name}: {a.width:,} features); {res.seconds} s")
    for name, m in res.methods.items():
        extra = f" (search: {m['search']})" if "search" in m else ""
        typer.echo(f"{name}: {m['pairs']:,} paired, {m['matched']:,} at similarity >= {m['threshold']:g}, "
                   f"median {m['median'] if m['median'] is not None else '-'}{extra}")
        typer.echo("  " + "  ".join(f"{k}: {v:,}" for k, v in m["histogram"].items()))
    if res.agreement is not None:
        typer.echo(f"the two methods name the same partner for {res.agreement:.1%} of the features paired by both")
