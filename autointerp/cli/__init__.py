"""The `autointerp` command line: one small Typer app per command group."""

from __future__ import annotations

import typer

from . import ingest, job
from .capture import capture
from .demo import demo
from .features import dictionaries, features, sample
from .export import export, serve
from .label import cost, label, labels, score

app = typer.Typer(help="Label the features of a neural network, and grade the labels.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
app.add_typer(ingest.app, name="ingest")
app.add_typer(job.app, name="job")
app.command("capture")(capture)
app.command("dictionaries")(dictionaries)
app.command("features")(features)
app.command("sample")(sample)
app.command("label")(label)
app.command("score")(score)
app.command("labels")(labels)
app.command("export")(export)
app.command("serve")(serve)
app.command("demo")(demo)
app.command("cost")(cost)


def main() -> None:
    app()
