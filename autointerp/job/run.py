"""`autointerp job run`: one unattended labelling run of a store, as a scheduler wants it.

- One job per store at a time: `<store>.job.lock` (flock; the kernel frees it when the process dies,
  even by kill -9). A second job gets a clear error naming the first, or waits for it (`wait`).
- A ledger row per run (`job_runs`), written when it starts and when it ends. A row still "running"
  when the next job takes the lock is marked "crashed". The LLM calls of the run carry its run id in
  the cost ledger.
- Incremental: a feature is labelled when it has no outcome under this explainer, prompt, sampler
  config and seed, or its activations changed since (see Store.done_features); `force` redoes.
- Budgets (dollars, tokens, features, minutes) stop the run gracefully: features in flight finish,
  everything finished is committed.
- Crash safety is the pipeline's: labels are committed as they finish, and every LLM reply is
  journalled before it is used, so a rerun after kill -9 loses no label, writes none twice and pays
  for no reply twice.
- JSON lines to the log file (start, progress at each commit, end, error); a progress bar only on a
  terminal. Exit codes: see EXIT.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from ..clock import utc_iso
from ..errors import EXIT, AutointerpError, StoreBusy, sigterm_as_interrupt
from ..pipeline import LabelRun, RunSummary, build, ensure_match, label, plan
from ..pipeline.work import clients_of
from ..store import Store
from .config import JobConfig, JobConfigError
from .ray_executor import merge_results, results_root, run_on_ray



class JobLocked(AutointerpError):
    exit_code = EXIT["could_not_start"]


def refused_path(store_path: Path) -> Path:
    """Jobs refused while another writer held the store, noted beside it (JSON lines) until the next job that
    gets the store moves them into its ledger; `job list` shows them meanwhile."""
    return Path(f"{store_path}.jobs.refused")


def note_refused(store_path: Path, run_id: str, cfg: JobConfig, executor: str, reason: str) -> None:
    row = {"run_id": run_id, "dictionary": cfg.dictionary or "", "config": cfg.text, "config_hash": cfg.hash,
           "executor": executor, "host": socket.gethostname(), "pid": os.getpid(), "exit_code": EXIT["could_not_start"],
           "stop_reason": reason, "started_at": utc_iso("microseconds")[:26]}
    with refused_path(store_path).open("a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # two refused jobs at once: whole lines
        fh.write(json.dumps(row) + "\n")


def read_refused(store_path: Path, take: bool = False) -> list[dict]:
    """The refused jobs noted beside the store; `take`: and empty the file (under its lock, so a refusal
    noted meanwhile is never lost)."""
    p = refused_path(store_path)
    if not p.exists():
        return []
    with p.open("r+", encoding="utf-8", errors="replace") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        text = fh.read()
        if take:
            fh.seek(0)
            fh.truncate()
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a kill: that refusal is lost, nothing else
    return out


def refused_rows(store_path: Path) -> list[dict]:
    """The refused jobs not yet in the ledger, as `job_runs` rows."""
    return [{"run_id": r["run_id"], "dictionary": r["dictionary"], "status": "could_not_start",
             "exit_code": r["exit_code"], "stop_reason": r["stop_reason"], "started_at": r["started_at"],
             "ended_at": r["started_at"], **{k: 0 for k in ("features_done", "features_graded", "features_skipped",
                                                            "features_failed", "grades_failed", "already_done",
                                                            "input_tokens", "output_tokens", "unpriced_calls",
                                                            "features_carried")},
             "dollars": 0.0, "duration_s": None, "executor": r["executor"], "host": r["host"], "pid": r["pid"],
             "config_hash": r["config_hash"], "kind": "job"} for r in read_refused(store_path)]


@dataclass
class JobResult:
    run_id: str
    status: str
    exit_code: int
    summary: RunSummary
    reason: str = ""


class JsonLog:
    """JSON lines appended to a file, one event each, with the time and run id."""

    def __init__(self, path: Path | None, run_id: str) -> None:
        if path is not None and (path.is_dir() or not path.parent.is_dir()):
            raise JobConfigError(f"--log {path}: " + ("a folder, not a file" if path.is_dir() else
                                                      f"folder {path.parent} does not exist"))
        self.path, self.run_id = path, run_id

    def __call__(self, event: str, **fields) -> None:
        if self.path is None:
            return
        doc = {"ts": utc_iso(), "run_id": self.run_id,
               "event": event, **fields}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, default=str) + "\n")


@contextmanager
def job_lock(store_path: Path, run_id: str, wait: float | None = None):
    """Hold `<store>.job.lock` for the block. `wait`: seconds to wait for another job (None: fail at once)."""
    path = Path(f"{store_path}.job.lock")
    fh = path.open("a+", encoding="utf-8")
    deadline = None if wait is None else time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is None or time.monotonic() >= deadline:
                    fh.seek(0)
                    holder = fh.read().strip() or "another job"
                    waited = "" if wait is None else f" (waited {wait:g} s)"
                    raise JobLocked(f"store {store_path} is being labelled by {holder}{waited}; "
                                    "pass --wait SECONDS to queue behind it") from None
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        fh.seek(0)
        fh.truncate()
        fh.write(f"job {run_id} (pid {os.getpid()} on {socket.gethostname()}, since "
                 f"{utc_iso('seconds')})")
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock


def _on_ray(store: Store, d, run, run_id: str, cfg: JobConfig, summary: RunSummary, address: str | None,
            snapshot_dir: str | None) -> None:
    """The features with work to do (to explain or to grade, as a local run would choose them), labelled
    on Ray; the summary is filled in place."""
    ensure_match(store, d, run)  # before the workers' snapshot: they read the match from it
    parts = build(store, d, run)
    try:
        work = plan(store, d, run, parts)
        summary.features, summary.already_done = work.selected, work.already_done
        summary.without_import = work.without_import
        summary.explainer, summary.prompt_hash = parts.key
    finally:
        for c in parts.clients:
            c.log.close()  # made only to plan: nothing was called
    summary.sampler_hash, summary.seed, summary.run_id, summary.executor = run.sampler.hash, run.seed, run_id, "ray"
    run_on_ray(store, d, work.features.tolist(), cfg, run_id, summary, force=run.force, address=address,
               snapshot_dir=snapshot_dir)
    summary.cost = store.ledger.cost_summary(run_id)


def _check_run(store: Store, d, run: LabelRun) -> LabelRun:
    """What would fail at the start of the run, checked before the ledger says it started; returns the run
    with its explainer and scorers built (`label` uses objects as they are: built once)."""
    run.selected(d.width)
    if run.carry.source is not None and store.dictionary(run.carry.source).dictionary_id == d.dictionary_id:
        raise JobConfigError(f"[job] carry_from {run.carry.source!r} is the dictionary being labelled")
    parts = build(store, d, run)
    return replace(run, explainer=parts.explainer, scorers=tuple(parts.grade), select_by=parts.select)


def run_job(store_path: str | Path, cfg: JobConfig, *, force: bool = False, wait: float | None = None,
            log_path: str | Path | None = None, progress: bool = False, executor: str = "local",
            address: str | None = None, snapshot_dir: str | None = None) -> JobResult:
    """Run one job; returns its status and exit code (it raises only for errors of the caller's making).
    `executor`: "local" (this process) or "ray" (a Ray cluster at `address`; see ray_executor)."""
    if executor not in ("local", "ray"):
        raise JobConfigError(f"unknown executor {executor!r}: local or ray")
    if executor == "ray" and cfg.run.batch.enabled:
        raise JobConfigError("batch = true runs on the providers' batch APIs: use the local executor")
    store_path = Path(store_path)
    if not store_path.is_file():
        raise JobConfigError(f"no store at {store_path} (ingest or capture into it first)")
    run_id = uuid.uuid4().hex[:12]
    log = JsonLog(Path(log_path) if log_path else None, run_id)
    deadline = None if wait is None else time.monotonic() + wait
    try:
        with job_lock(store_path, run_id, wait):
            try:  # the store's one writer: another (a `label`, an import) may hold it; `wait` waits for it too
                store = Store(store_path, wait=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except StoreBusy as e:
                raise JobLocked(f"{e}; pass --wait SECONDS to queue behind it" if wait is None else str(e)) from None
            return _run_job(store, store_path, cfg, run_id, log, force, executor, address, snapshot_dir, progress)
    except (JobLocked, StoreBusy) as e:
        log("error", status="could_not_start", error=str(e))
        note_refused(store_path, run_id, cfg, executor, str(e))
        raise
    except AutointerpError as e:
        log("error", status="could_not_start", error=str(e))
        raise


def _close(run: LabelRun) -> None:
    """The call logs of a built run's LLM clients, closed: the run is not labelled with them."""
    for c in clients_of(run.explainer, *run.scorers):
        c.log.close()


def _run_job(store: Store, store_path: Path, cfg: JobConfig, run_id: str, log: JsonLog, force: bool, executor: str,
             address: str | None, snapshot_dir: str | None, progress: bool) -> JobResult:
    with store:
        refused = read_refused(store_path, take=True)
        try:
            with store.transaction() as w:
                crashed = w.ledger.mark_crashed_jobs()
                w.ledger.add_refused_jobs(refused)
        except BaseException:  # not in the ledger: noted again for the next job
            with refused_path(store_path).open("a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in refused)
            raise
        root = results_root(store_path, snapshot_dir)  # what a crashed Ray run left: labels, paid replies
        leftover = merge_results(store, root) if root.exists() else None
        try:
            d = store.dictionary(cfg.dictionary)
            run = cfg.with_run_id(run_id)
            built = _check_run(store, d, run)
        except AutointerpError as e:
            log("error", status="could_not_start", error=str(e))
            raise JobConfigError(str(e)) from None
        with store.transaction() as w:
            w.ledger.start_job(run_id, dictionary=d.name, config=cfg.text, config_hash=cfg.hash, executor=executor,
                        host=socket.gethostname(), pid=os.getpid())
        log("start", dictionary=d.name, config_hash=cfg.hash, force=force, crashed_before=crashed,
            budget=str(run.budget), explainer=str(run.explainer), scorers=[str(x) for x in run.scorers],
            executor=executor, merged_leftovers=leftover)
        t0 = time.monotonic()
        summary = RunSummary()
        status, reason = "error", ""
        try:
            with sigterm_as_interrupt():  # SIGTERM stops like Ctrl-C
                if force:
                    run, built = replace(run, force=True), replace(built, force=True)
                if executor == "ray":  # the driver and each worker build their own
                    _close(built)
                    _on_ray(store, d, run, run_id, cfg, summary, address, snapshot_dir)
                else:
                    label(store, d, built, summary=summary, progress=progress,
                          on_flush=lambda s: log("progress", explained=s.explained, graded=s.graded,
                                                 skipped=s.skipped, failed=s.failed))
                status, reason = outcome(summary)
        except KeyboardInterrupt:
            status, reason = "interrupted", "stopped by a signal; what finished is committed"
        except AutointerpError as e:  # raised mid-run: what was committed stays, the next run goes on
            # it started: once anything was committed or paid for, it is "failed", never "could not start"
            status = "failed" if summary.committed or store.ledger.cost_summary(run_id) else "could_not_start"
            reason = str(e)
            log("error", status=status, error=str(e))
        except Exception as e:  # noqa: BLE001 - logged with its traceback, then the ledger says so
            status, reason = "error", f"{type(e).__name__}: {e}"
            log("error", status=status, error=reason, traceback=traceback.format_exc())
        code = EXIT[status]
        cost = store.ledger.cost_summary(run_id)
        tokens_in = sum(r["input_tokens"] + r["cache_read_tokens"] + r["cache_write_tokens"] for r in cost)
        tokens_out = sum(r["output_tokens"] for r in cost)
        dollars = sum(r["cost_usd"] for r in cost)
        unpriced = sum(r["unpriced_calls"] for r in cost)
        with store.transaction() as w:
            w.ledger.end_job(run_id, status=status, exit_code=code, stop_reason=reason, summary=summary.to_dict(),
                      input_tokens=tokens_in, output_tokens=tokens_out, dollars=dollars,
                      duration_s=round(time.monotonic() - t0, 3), unpriced_calls=unpriced)
        log("end", status=status, exit_code=code, reason=reason, explained=summary.explained,
            graded=summary.graded, skipped=summary.skipped, failed=summary.failed,
            failed_grades=summary.failed_grades, already_done=summary.already_done, input_tokens=tokens_in,
            output_tokens=tokens_out, dollars=round(dollars, 6), unpriced_calls=unpriced,
            seconds=round(time.monotonic() - t0, 2))
        return JobResult(run_id, status, code, summary, reason)


def outcome(summary: RunSummary) -> tuple[str, str]:
    """A finished run's status (a key of EXIT) and the reason, from its summary."""
    return summary.outcome()
