"""`autointerp job run`: one unattended labelling run of a store, as a scheduler wants it.

- One job per store at a time: `<store>.job.lock` (flock; the kernel frees it when the process dies,
  even by kill -9). A second job gets a clear error naming the first, or waits for it (`wait`).
- A ledger row per run (`job_runs`), written when it starts and when it ends. A row still "running"
  when the next job takes the lock is marked "crashed". The LLM calls of the run carry its run id in
  the cost ledger.
- Incremental: a feature is labelled when it has no outcome under this explainer, prompt, sampler
  config and seed, or its activations changed since (see Store.labelled_features); `force` redoes.
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
import signal
import socket
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import AutointerpError
from ..llm import LLMOptions
from ..pipeline import Budget, label
from ..store import Store
from .config import JobConfig, JobConfigError

# What a scheduler can act on.
EXIT = {"done": 0,             # every feature has an outcome; none failed
        "error": 1,            # an unexpected error (the log has the traceback)
        "could_not_start": 20,  # bad job file, store or dictionary; another job holds the store
        "budget": 21,          # stopped by a budget; run again (with more budget) to go on
        "failed": 22,          # finished, but some features failed (they are retried next run)
        "interrupted": 23}     # stopped by SIGINT or SIGTERM; what finished is committed


class JobLocked(AutointerpError):
    exit_code = EXIT["could_not_start"]


@dataclass
class JobResult:
    run_id: str
    status: str
    exit_code: int
    summary: dict


class JsonLog:
    """JSON lines appended to a file, one event each, with the time and run id."""

    def __init__(self, path: Path | None, run_id: str) -> None:
        self.path, self.run_id = path, run_id

    def __call__(self, event: str, **fields) -> None:
        if self.path is None:
            return
        doc = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "run_id": self.run_id,
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
                 f"{datetime.now(timezone.utc).isoformat(timespec='seconds')})")
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock


def _features(spec: str | None, width: int) -> np.ndarray | None:
    if spec is None:
        return None
    from ..cli.common import parse_features

    try:
        feats = np.array(parse_features(spec))
    except AutointerpError as e:
        raise JobConfigError(f"[job] features: {e}") from None
    if len(feats) and (feats.min() < 0 or feats.max() >= width):
        raise JobConfigError(f"[job] features must be within 0..{width - 1}")
    return feats


def _llm_options(cfg: JobConfig, run_id: str) -> LLMOptions:
    lim = cfg.limits
    return LLMOptions(base_url=lim.get("base_url"), api_key_env=lim.get("api_key_env"), prompt=cfg.prompt,
                      candidates=cfg.candidates, requests_per_minute=lim.get("rpm", 50),
                      input_tokens_per_minute=lim.get("itpm"), output_tokens_per_minute=lim.get("otpm"),
                      max_in_flight=lim.get("max_in_flight", 16), attempts=lim.get("attempts", 6),
                      timeout=lim.get("timeout", 60.0), run_id=run_id)


def _budget(cfg: JobConfig) -> Budget:
    b = cfg.budget
    return Budget(dollars=b.get("dollars"), tokens=b.get("tokens"), features=b.get("features"),
                  seconds=None if b.get("minutes") is None else 60.0 * b["minutes"])


def _on_ray(store: Store, d, feats, cfg: JobConfig, run_id: str, force: bool, address: str | None,
            snapshot_dir: str | None) -> dict:
    """The features to do (incremental, as a local run would choose them), labelled on Ray."""
    from ..pipeline import run_key
    from .ray_executor import run_on_ray

    every = list(range(d.width)) if feats is None else [int(f) for f in np.unique(feats)]
    key = run_key(store, d, cfg.explainer, _llm_options(cfg, run_id), cfg.sampler, cfg.seed)
    done = set() if force else store.labelled_features(d.dictionary_id, key)
    todo = [f for f in every if f not in done]
    summary = run_on_ray(store, d, todo, cfg, run_id, address=address, snapshot_dir=snapshot_dir)
    summary.update(features=len(every), already_done=len(every) - len(todo), explainer=key[0], prompt_hash=key[1],
                   sampler_hash=key[2], seed=key[3], run_id=run_id, cost=store.cost_summary(run_id))
    return summary


def run_job(store_path: str | Path, cfg: JobConfig, *, force: bool = False, wait: float | None = None,
            log_path: str | Path | None = None, progress: bool = False, executor: str = "local",
            address: str | None = None, snapshot_dir: str | None = None) -> JobResult:
    """Run one job; returns its status and exit code (it raises only for errors of the caller's making).
    `executor`: "local" (this process) or "ray" (a Ray cluster at `address`; see ray_executor)."""
    if executor not in ("local", "ray"):
        raise JobConfigError(f"unknown executor {executor!r}: local or ray")
    if executor == "ray" and cfg.batch:
        raise JobConfigError("batch = true runs on the providers' batch APIs: use the local executor")
    store_path = Path(store_path)
    run_id = uuid.uuid4().hex[:12]
    log = JsonLog(Path(log_path) if log_path else None, run_id)
    with job_lock(store_path, run_id, wait):
        try:
            store = Store(store_path)
        except AutointerpError as e:
            log("error", status="could_not_start", error=str(e))
            raise
        with store:
            with store.writer() as w:
                crashed = w.mark_crashed_jobs()
            from .ray_executor import merge_results, results_root

            root = results_root(store_path, snapshot_dir)  # what a crashed Ray run left: labels, paid replies
            leftover = merge_results(store, root) if root.exists() else None
            try:
                d = store.dictionary(cfg.dictionary)
                feats = _features(cfg.features, d.width)
            except AutointerpError as e:
                log("error", status="could_not_start", error=str(e))
                raise
            with store.writer() as w:
                w.start_job(run_id, dictionary=d.name, config=cfg.text, config_hash=cfg.hash, executor=executor,
                            host=socket.gethostname(), pid=os.getpid())
            log("start", dictionary=d.name, config_hash=cfg.hash, force=force, crashed_before=crashed,
                budget=cfg.budget, explainer=cfg.explainer, scorers=list(cfg.scorers), executor=executor,
                merged_leftovers=leftover)
            t0 = time.monotonic()
            summary: dict = {}
            status, reason = "error", ""
            previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C
            try:
                if executor == "ray":
                    summary.update(_on_ray(store, d, feats, cfg, run_id, force, address, snapshot_dir))
                else:
                    label(store, d, feats, explainer=cfg.explainer, scorers=cfg.scorers, summary=summary,
                          config=cfg.sampler, seed=cfg.seed, force=force, concurrency=cfg.concurrency,
                          progress=progress, llm=_llm_options(cfg, run_id), batch=cfg.batch,
                          scorer_model=cfg.scorer_model, select_by=cfg.select_by, budget=_budget(cfg),
                          batch_wait=_budget(cfg).seconds,  # batches still out then: the next run collects
                          on_flush=lambda s: log("progress", ok=s["ok"], skipped=s["skipped"], failed=s["failed"]))
                if summary.get("stopped"):
                    status, reason = "budget", summary["stopped"]
                elif summary.get("batch", {}).get("pending"):
                    status, reason = "budget", "batches still pending: run again to collect them"
                elif summary["failed"]:
                    status, reason = "failed", f"{summary['failed']} features failed: " + ", ".join(
                        f"{n} {k}" for k, n in summary["failed_kinds"].items())
                else:
                    status = "done"
            except KeyboardInterrupt:
                status, reason = "interrupted", "stopped by a signal; what finished is committed"
            except AutointerpError as e:
                status, reason = "could_not_start", str(e)
                log("error", status=status, error=str(e))
            except Exception as e:  # noqa: BLE001 - logged with its traceback, then the ledger says so
                status, reason = "error", f"{type(e).__name__}: {e}"
                log("error", status=status, error=reason, traceback=traceback.format_exc())
            finally:
                signal.signal(signal.SIGTERM, previous)
            code = EXIT[status]
            cost = store.cost_summary(run_id)
            tokens_in = sum(r["input_tokens"] + r["cache_read_tokens"] + r["cache_write_tokens"] for r in cost)
            tokens_out = sum(r["output_tokens"] for r in cost)
            dollars = sum(r["cost_usd"] for r in cost)
            with store.writer() as w:
                w.end_job(run_id, status=status, exit_code=code, stop_reason=reason, summary=summary,
                          input_tokens=tokens_in, output_tokens=tokens_out, dollars=dollars,
                          duration_s=round(time.monotonic() - t0, 3))
            log("end", status=status, exit_code=code, reason=reason, ok=summary.get("ok", 0),
                skipped=summary.get("skipped", 0), failed=summary.get("failed", 0),
                already_done=summary.get("already_done", 0), input_tokens=tokens_in, output_tokens=tokens_out,
                dollars=round(dollars, 6), seconds=round(time.monotonic() - t0, 2))
            return JobResult(run_id, status, code, summary)

