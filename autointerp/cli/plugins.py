"""`autointerp plugins`: the explainers, scorers, simulators and providers that installed packages add."""

from __future__ import annotations

import typer

from .common import JsonOpt, emit_json, handle_errors, safe


@handle_errors
def plugins(as_json: JsonOpt = False) -> None:
    """Parts added by installed packages (entry points autointerp.explainers, .scorers, .simulators,
    .providers): each is accepted by --explainer, --scorer, --simulator or as PROVIDER:MODEL like the
    built-in ones."""
    from ..plugins import describe

    rows = describe()
    if as_json:
        emit_json({"plugins": rows})
        return
    if not rows:
        typer.echo("no plugins installed (a package registers parts under the entry-point groups "
                   "autointerp.explainers, autointerp.scorers, autointerp.simulators, autointerp.providers)")
        return
    typer.echo("kind\tname\tpackage\tversion\tentry point")
    for r in rows:
        typer.echo(f"{r['kind']}\t{safe(r['name'])}\t{safe(str(r['package']))}\t{safe(str(r['version']))}\t"
                   f"{safe(r['value'])}")
