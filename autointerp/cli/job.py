"""`autointerp job run | list | show`: unattended labelling runs and their ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import AutointerpError, StoreError, UsageError
from ..job import EXIT, load_config, run_job
from .common import (
    JsonOpt,
    LimitOpt,
    StoreOpt,
    check_limit,
    emit_json,
    handle_errors,
    opened,
)
from .label import summary_line

app = typer.Typer(help="Unattended labelling runs (cron, schedulers): budgets, a lock per store, a run ledger "
                       "(`job list`: every run of the store, plain `label` runs too). "
                       f"Exit codes: {', '.join(f'{v} {k}' for k, v in EXIT.items())}.", no_args_is_help=True)


@app.command("run")
@handle_errors
def run(store: StoreOpt, config: Annotated[Path, typer.Option("--config", help="The job file (TOML).")],
        force: Annotated[bool, typer.Option(help="Relabel features that already have a label.")] = False,
        wait: Annotated[float | None, typer.Option(help="If another job holds the store, wait up to this many "
                                                        "seconds (default: fail at once).")] = None,
        log: Annotated[Path | None, typer.Option(help="JSON-lines log file (default: STORE.jobs.log).")] = None,
        executor: Annotated[str, typer.Option(help="local: this process; ray: shards over a Ray cluster.")] = "local",
        address: Annotated[str | None, typer.Option(help="ray: the cluster (host:port); default: start a local "
                                                         "one.")] = None,
        snapshot_dir: Annotated[Path | None, typer.Option(help="ray: where the store snapshot and result shards "
                                                               "go (shared by every node; default STORE.ray).")] = None,
        as_json: JsonOpt = False) -> None:
    """Label what is new or changed in a store (and grade labels lacking a grade of the job's scorers),
    within the job's budget. Progress on stderr (a bar on a terminal, else a line every ~10 s)."""
    if wait is not None and not wait >= 0:
        raise UsageError(f"--wait must be 0 or more seconds, got {wait}")
    try:
        cfg = load_config(config)
        res = run_job(store, cfg, force=force, wait=wait, log_path=log or Path(f"{store}.jobs.log"),
                      progress=not as_json, executor=executor, address=address,
                      snapshot_dir=str(snapshot_dir) if snapshot_dir else None)
    except AutointerpError as e:  # bad job file, store, dictionary; the store held by another job
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(EXIT["could_not_start"]) from None
    s = res.summary
    if as_json:
        emit_json({"run_id": res.run_id, "status": res.status, "exit_code": res.exit_code, "summary": s.to_dict()})
    else:
        typer.echo(f"job {res.run_id}: {res.status}; {summary_line(s)}")
    if res.status == "budget":  # expected: a notice, not an error; the exit code says "run again"
        typer.echo(f"stopped: job {res.run_id} ({res.reason or 'a budget'}); what finished is committed, run again "
                   f"to go on (exit {res.exit_code})", err=True)
    elif res.status != "done":
        typer.echo(f"error: job {res.run_id} {res.status} (exit {res.exit_code}): {res.reason or 'see the log'}",
                   err=True)
    raise typer.Exit(res.exit_code)


@app.command("list")
@handle_errors
def list_(store: StoreOpt, limit: LimitOpt = 20, as_json: JsonOpt = False) -> None:
    """Every run of a store, newest first: jobs, plain `label` runs, calibrations and captures, with each
    one's id (for `job show`, `diff --runs`, `cost --run`), kind, status and counts."""
    check_limit(limit)
    with opened(store, read_only=True) as s:
        rows = s.ledger.runs(limit)
    from ..job.run import refused_rows

    rows = sorted([*rows, *refused_rows(Path(store))], key=lambda r: r["started_at"], reverse=True)[:limit]
    if as_json:
        emit_json({"runs": rows})
        return
    typer.echo("run\tkind\tstatus\tstarted\tseconds\tlabelled\tcarried\tgraded\tskipped\tfailed\tgrades_failed\t"
               "already\tusd\treason")
    for r in rows:
        usd = f"{r['dollars']:.4f}" + (f"+{r['unpriced_calls']} unpriced" if r["unpriced_calls"] else "")
        typer.echo(f"{r['run_id']}\t{r['kind']}\t{r['status']}\t{r['started_at'][:19]}\t{r['duration_s'] or '-'}\t"
                   f"{r['features_done']}\t{r['features_carried']}\t{r['features_graded']}\t{r['features_skipped']}\t"
                   f"{r['features_failed']}\t"
                   f"{r['grades_failed']}\t{r['already_done']}\t{usd}\t{r['stop_reason']}")


@app.command("show")
@handle_errors
def show(store: StoreOpt, run_id: Annotated[str, typer.Argument(help="A run id (a unique prefix is enough).")],
         as_json: JsonOpt = False) -> None:
    """One run `job list` lists: a job's or a label run's config, counts, cost and summary; a calibration's
    or a capture's row."""
    with opened(store, read_only=True) as s:
        r = s.ledger.job_run(run_id)
        if r is None:  # a calibration or a capture: the row `job list` shows
            rows = [x for x in s.ledger.runs(None) if x["run_id"].startswith(run_id)]
            r = rows[0] if len(rows) == 1 else None
    if r is None:
        raise StoreError(f"no single run matches {run_id!r} (`autointerp job list` lists them)")
    if as_json:
        emit_json(r)
        return
    for k, v in r.items():
        if k not in ("config", "summary"):
            typer.echo(f"{k}: {v}")
    if r.get("config"):
        typer.echo("config:\n" + r["config"].rstrip())
