"""The `autointerp` command line: one small Typer app per command group.

Every error a user can cause is one line on stderr and an exit code from `errors.EXIT_CODES` (listed by
`autointerp --help` and README): autointerp's own errors through `common.handle_errors`, Click's usage
errors (an unknown option, a value of the wrong type) through `OneLineErrors` below.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from ..errors import EXIT_CODES
from . import ingest, job
from .calibrate import calibrate
from .capture import capture, trace
from .demo import demo
from .export import export, serve
from .features import dictionaries, features, sample
from .label import label, score
from .labels import cost, labels, show
from .match import diff, match, matches
from .plugins import plugins
from .search import encode, search


# Typer's Click (vendored since Typer 0.20) names its error classes only through BadParameter's bases; the
# type checker reads them where the installed Typer keeps them.
if TYPE_CHECKING:
    from typer._click.exceptions import ClickException, UsageError
else:
    UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class OneLineErrors(TyperGroup):
    """Click's usage errors as one line ("error: No such option: --bogus (autointerp label --help)"), exit 2."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False,
                              windows_expand_args=windows_expand_args, **extra)
            code = rv if isinstance(rv, int) else 0  # a typer.Exit(code) comes back as its code
        except UsageError as e:
            where = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
            typer.echo(f"error: {e.format_message()}{where}", err=True)
            code = e.exit_code
        except ClickException as e:
            typer.echo(f"error: {e.format_message()}", err=True)
            code = e.exit_code
        except typer.Abort:
            typer.echo("interrupted", err=True)
            code = 23
        if not standalone_mode:
            return code
        sys.exit(code)


def _exit_code_lines() -> str:
    return "\n\n".join(f"{code}: {what}" for code, what in EXIT_CODES.items())


def _version() -> str:
    try:
        return version("autointerp")
    except PackageNotFoundError:
        return "unknown"


app = typer.Typer(cls=OneLineErrors, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Label the features of a neural network, and grade the labels. Every command has --help; "
                       "--store may come from $AUTOINTERP_STORE.",
                  epilog="Exit codes (every command):\n\n" + _exit_code_lines())


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"autointerp {_version()}")
        raise typer.Exit(0)


@app.callback()
def _main(version_: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                                 help="Print the version and exit.")] = False) -> None:
    return None


app.add_typer(ingest.app, name="ingest")
app.add_typer(job.app, name="job")
app.command("capture")(capture)
app.command("trace")(trace)
app.command("dictionaries")(dictionaries)
app.command("features")(features)
app.command("sample")(sample)
app.command("label")(label)
app.command("score")(score)
app.command("calibrate")(calibrate)
app.command("labels")(labels)
app.command("show")(show)
app.command("export")(export)
app.command("serve")(serve)
app.command("search")(search)
app.command("match")(match)
app.command("matches")(matches)
app.command("diff")(diff)
app.command("encode")(encode)
app.command("demo")(demo)
app.command("cost")(cost)
app.command("plugins")(plugins)


def main() -> None:
    app()
