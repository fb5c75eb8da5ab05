"""features -> samples -> explanations -> scores, each feature's outcome written to the store as it completes.

What is done is tracked per label and per scorer. A feature is *explained* when it has no finished
outcome (ok or skipped) under this run's explainer, prompt hash, sampler config and seed, made from its
current activations; it is *graded* when its label exists but lacks a grade (ok or undefined) of one of
this run's scorers at its current version (name, version, scorer model): only the missing scorers run,
with no explainer call. Everything else is already done. `force` explains every selected feature again.

Three stages overlap in a LabelRunner: a thread samples the next features in batches (a feature whose stored sample, from `sample --all`, was drawn under the same config and seed from its
current activations is read, not drawn again); `concurrency` workers explain and score (offline methods
are plain functions and run one at a time; LLM methods are coroutines and run up to `concurrency` at
once); finished features are committed (`LabelRunner.commit`, the one place that writes) every
`flush_every` results or `flush_seconds`, whichever comes first, and at the end, also when the run is
interrupted.

Best-of-k: an explainer that gives several candidates has each graded by one (cheap) scorer, `select_by`
(default: the first scorer); the best becomes the feature's label and is graded by every other scorer;
all candidates are stored with their grades.

A feature that cannot be labelled never stops the run: too few examples is "skipped" with the sampler's
reason; an explainer that raises is "failed" with the error; a scorer that raises gives a "failed" grade.
The summary counts each kind.
"""

from __future__ import annotations

import asyncio
import copy
import os
import socket
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
from threadpoolctl import threadpool_limits

from ..clock import utcnow as _now
from ..errors import EXIT, AutointerpError, LabelError, UsageError
from ..progress import Progress
from ..records import (
    Dictionary,
    Explanation,
    FeatureLabel,
    FeatureSample,
    Grades,
    Score,
)
from ..sample import Sampler
from ..score import make_scorers
from ..embed import ENCODING
from ..search import index_labels
from ..store import Store
from .batch import plan_batches
from .config import LabelRun
from .plan import WorkPlan, build, ensure_match, plan
from .work import Item, Parts, call, clients_of, do_batch, do_item, grade_one
from .summary import RunSummary


class _Feed:
    """Work items in feature order, a batch at a time, read through `cursor` (the sampling thread's)."""

    def __init__(self, store: Store, sampler: Sampler, work: WorkPlan, parts: Parts, batch: int,
                 summary: RunSummary) -> None:
        self.store, self.sampler, self.work, self.parts, self.batch, self.summary = \
            store, sampler, work, parts, batch, summary
        d = sampler.dictionary
        self.stored = store.samples.current_samples(d.dictionary_id, sampler.config.hash, sampler.seed)
        self.other = store.samples.sampled_features(d.dictionary_id)  # stored under any config (to say why not read)
        self.todo = work.features

    def batches(self) -> range:
        return range(0, len(self.todo), self.batch)

    def items(self, i: int, cursor: Store) -> list[Item]:
        feats = self.todo[i:i + self.batch]
        have = np.isin(feats, self.stored, assume_unique=True)
        samples = self.sampler.load_many(feats[have], cursor) + self.sampler.sample_many(feats[~have], cursor)
        self.summary.samples_stored += int(have.sum())
        self.summary.samples_drawn += int((~have).sum())
        self.summary.samples_not_current += int(np.isin(feats[~have], self.other, assume_unique=True).sum())
        w = self.work
        lo, hi = np.searchsorted(w.grade_features, [feats[0], feats[-1] + 1]) if len(feats) else (0, 0)
        regrade = dict(zip(w.grade_features[lo:hi].tolist(), zip(w.grade_explanations[lo:hi].tolist(),
                                                                   w.grade_masks[lo:hi].tolist())))
        texts = cursor.labels.explanations([e for e, _ in regrade.values()]) if regrade else {}
        if self.parts.explainer.uses_outputs:  # its logit-lens tokens, for the explainer
            outputs = cursor.activations.output_tokens(self.sampler.dictionary.dictionary_id, [s.feature for s in samples])
            samples = [replace(s, outputs=outputs.get(s.feature)) for s in samples]
        carried = self._carried(feats, cursor)
        out = []
        for s in sorted(samples, key=lambda s: s.feature):
            if s.feature in regrade:
                eid, mask = regrade[s.feature]
                out.append(Item(s, texts[eid], [g for j, g in enumerate(self.parts.grade) if mask >> j & 1]))
            elif s.feature in carried:
                out.append(Item(s, carried=carried[s.feature][0], partner_value=carried[s.feature][1]))
            else:
                out.append(Item(s))
        return out

    def _carried(self, feats: np.ndarray, cursor: Store) -> dict[int, tuple[Explanation, float | None]]:
        """feature -> (its partner's label as a label of this feature, the partner's grade) for the batch."""
        c = self.work.carry
        if c is None or not len(feats):
            return {}
        lo, hi = np.searchsorted(c["to_feature"], [feats[0], feats[-1] + 1])
        if lo == hi:
            return {}
        partners = cursor.labels.explanations(c["explanation_id"][lo:hi].tolist())
        d, name, (explainer, prompt_hash) = self.sampler.dictionary, self.work.carry_from, self.parts.key
        method = self.parts.carry.method
        out = {}
        for f, pf, sim, eid, pv in zip(*(c[k][lo:hi].tolist() for k in ("to_feature", "from_feature", "similarity",
                                                                          "explanation_id", "partner_value"))):
            p = partners[eid]
            out[f] = (Explanation(
                dictionary=d.name, feature=f, text=p.text, explainer=explainer, prompt_hash=prompt_hash,
                sampler=self.sampler.config, seed=self.sampler.seed, carried=f"{name}#{pf}, {method} {sim:.3f}",
                evidence={"carried_from": {"dictionary": name, "feature": pf, "explanation_id": eid, "method": method,
                                           "similarity": round(sim, 4),
                                           "sampler": p.sampler.hash, "seed": p.seed,
                                           "min_similarity": self.parts.carry.min_similarity,
                                           "partner_grade": None if pv != pv else pv}}), None if pv != pv else pv)
        return out


def label(store: Store, dictionary: Dictionary, run: LabelRun | None = None, *, progress: bool = False,
          on_flush=None, sink=None, summary: RunSummary | None = None) -> RunSummary:
    """Label the selected features of one dictionary as `run` says; returns what was done.

    `on_flush(summary)` is called after each commit (progress for logs). `sink(outcomes)`: where
    finished labels and grades go instead of the store (a Ray worker labels from a read-only snapshot).
    `summary`: filled in place, so the caller keeps the counts of what was committed if the run is
    interrupted. A budget (`run.budget`) stops the run gracefully: `summary.stopped` says which (a
    budget may also be shared by many processes: its `reached` may be a coroutine).

    With `run.batch.enabled`, every uncached LLM request (explainer and scorers, stage by stage: see
    `batch.plan_batches`) first goes through the providers' batch APIs (half price), then the run
    labels from the cache. Batches are recorded in the store when submitted: a run stopped while they
    are pending is resumed by running again, which collects and never resubmits.
    """
    run = run or LabelRun()
    ensure_match(store, dictionary, run, progress)
    parts = build(store, dictionary, run)
    work = plan(store, dictionary, run, parts)
    summary = summary if summary is not None else RunSummary()
    summary.carry_from = run.carry.source
    summary.dictionary, summary.features, summary.already_done = dictionary.name, work.selected, work.already_done
    summary.without_import = work.without_import
    summary.explainer, summary.prompt_hash = parts.key
    summary.sampler_hash, summary.seed = run.sampler.hash, run.seed
    summary.select_by = parts.select.name if parts.select else None
    for s in parts.grade:
        summary.scores.setdefault(s.name, {})
    t0 = time.perf_counter()
    clients = parts.clients
    sampler = Sampler(store, dictionary, run.sampler, run.seed)
    if run.batch.enabled:  # refused before the run is recorded
        if not clients:
            raise UsageError("--batch needs an LLM explainer or scorer (anthropic:MODEL, ...)")
        if not all(c.use_cache for c in clients):
            raise UsageError("--batch collects replies into the response cache: it cannot run with --no-cache")
    # a run with something to do gets a row in the run ledger (`job list`); a rerun with nothing left, none
    busy = len(work.features) > 0 or run.batch.enabled
    ledger = _RunLedger.start(store, dictionary, run, parts) if sink is None and busy else None
    status = "error"
    try:
        pending = False  # batches still pending: the next run collects them
        if run.batch.enabled:
            summary.batch = batched = run_sync(plan_batches(_Feed(store, sampler, work, parts, run.sample_batch,
                                                                     RunSummary()), parts, run.batch))
            pending = bool(batched["pending"])
        if not pending:
            feed = _Feed(store, sampler, work, parts, run.sample_batch, summary)
            runner = LabelRunner(store, dictionary, feed, parts, run, summary, progress, on_flush, sink)
            if run_sync(_interruptible(runner.go())):
                raise KeyboardInterrupt  # caught in the run's task (see _interruptible): raised out here instead
        status = "done"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except AutointerpError:
        status = "failed"
        raise
    finally:
        summary.seconds = round(time.perf_counter() - t0, 2)
        summary.run_id = run.llm.run_id  # on every label and grade it wrote (`diff --runs`)
        if clients:  # an LLM explainer or scorer: what this run cost (they share the run id)
            summary.cost = store.ledger.cost_summary(run.llm.run_id)
        if ledger is not None:
            ledger.end(store, summary, status)
    return summary


@dataclass
class _RunLedger:
    """A plain `label` run's row in the run ledger (`job_runs`, kind "label"), so `job list` shows it
    beside the jobs; a job writes its own row (the run id is already there) and a Ray worker none."""

    run_id: str
    t0: float

    @classmethod
    def start(cls, store: Store, dictionary: Dictionary, run: LabelRun, parts: Parts) -> _RunLedger | None:
        if store.read_only or dictionary.kind == "gold" or store.ledger.has_run(run.llm.run_id):
            return None
        scorers = ", ".join(f'"{s.name}"' for s in parts.grade)
        feats = "all" if run.features is None else f"{len(run.selected(dictionary.width)):,} selected"
        config = (f'# autointerp label\nexplainer = "{parts.key[0]}"\nscorers = [{scorers}]\nseed = {run.seed}\n'
                  f'sampler = "{run.sampler.hash}"\nforce = {str(run.force).lower()}\n# features: {feats}\n')
        with store.transaction() as w:
            w.ledger.start_job(run.llm.run_id, dictionary=dictionary.name, config=config, config_hash="",
                               executor="local", host=socket.gethostname(), pid=os.getpid(), kind="label")
        return cls(run.llm.run_id, time.monotonic())

    def end(self, store: Store, summary: RunSummary, status: str) -> None:
        """Its status (done, budget or failed as the summary says; interrupted; failed or error when it raised),
        counts and cost."""
        reason = ""
        if status == "done":
            status, reason = summary.outcome()
        cost = summary.cost
        with store.transaction() as w:
            w.ledger.end_job(self.run_id, status=status, exit_code=EXIT[status], stop_reason=reason,
                             summary=summary.to_dict(),
                             input_tokens=sum(r["input_tokens"] + r["cache_read_tokens"] + r["cache_write_tokens"]
                                              for r in cost),
                             output_tokens=sum(r["output_tokens"] for r in cost),
                             dollars=sum(r["cost_usd"] for r in cost), duration_s=round(time.monotonic() - self.t0, 3),
                             unpriced_calls=sum(r["unpriced_calls"] for r in cost))


def run_sync(coro):
    """Run a coroutine to its end from synchronous code: on this thread, or, when this thread already runs an
    event loop (a Jupyter notebook's), on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="autointerp-run") as pool:
        return pool.submit(asyncio.run, coro).result()


async def _interruptible(coro) -> bool:
    """Await `coro` in the run's main task; True if a KeyboardInterrupt stopped it.

    SIGTERM stops a run as Ctrl-C does (errors.sigterm_as_interrupt), but it raises KeyboardInterrupt
    wherever the main thread is, often inside a worker task (an offline explainer's torch call). The task
    group re-raises it in the main task; were it to leave the task, asyncio would report the task's
    exception as "never retrieved" with a long traceback. Caught here, the run ends as an interrupted one:
    `label` raises KeyboardInterrupt again, outside the event loop, and the caller prints its summary."""
    try:
        await coro
    except KeyboardInterrupt:
        return True
    return False


class LabelRunner:
    """One labelling run in flight, as explicit state: a producer samples the features to do (a thread, the
    `_Feed`), `workers` explain and grade them (LLM parts: one feature at a time per worker, `concurrency`
    workers; offline parts: what the queue holds, a batch at a time, in one worker), and `commit` is the
    one place their outcomes are written: every `flush_every` outcomes or `flush_seconds`, and at the end
    (also after an error or an interrupt: what finished is kept). A budget stops new features from starting
    (`admit`); those in flight finish."""

    def __init__(self, store: Store, dictionary: Dictionary, feed: _Feed, parts: Parts, run: LabelRun,
                 summary: RunSummary, progress: bool, on_flush=None, sink=None) -> None:
        self.store, self.dictionary, self.feed, self.parts, self.run = store, dictionary, feed, parts, run
        self.summary, self.on_flush, self.sink = summary, on_flush, sink
        self.workers = 1 if parts.offline else run.concurrency
        self.clients = parts.clients
        self.finished: list = []  # outcomes not yet committed
        self.started = 0  # features admitted
        self.t0 = self.last_commit = time.monotonic()
        self.bar = Progress(len(feed.todo), f"label {dictionary.name}", "feat", progress)
        self.queue: asyncio.Queue[Item | None]  # made in the run's event loop (go)
        self.stop: asyncio.Event  # set when a budget is reached: no new feature starts (made in go)

    async def go(self) -> None:
        self.queue = asyncio.Queue(maxsize=max(self.run.sample_batch, 2 * self.workers))
        self.stop = asyncio.Event()
        # The sampling thread is Python-bound; each torch or DuckDB call of the workers gives up the GIL and
        # waits up to the switch interval to get it back: 0.5 ms instead of 5 labels offline ~25% faster.
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, 0.0005))
        # numpy's BLAS on one thread: the grades' small products (a window-by-label similarity, a bootstrap's
        # 1,000 replicates) gain nothing from two, and two BLAS threads spinning beside torch's own pool made
        # each torch call after a numpy product wait ~30 ms (offline labelling 1.4x slower)
        blas = threadpool_limits(1, user_api="blas")
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.produce())
                for _ in range(self.workers):
                    tg.create_task(self.work_batches() if self.parts.offline else self.work())
        finally:  # also on error or interrupt: what finished is kept
            sys.setswitchinterval(switch)
            blas.restore_original_limits()
            try:
                self.commit()
            finally:
                await self.parts.aclose()
                self.bar.close()

    def commit(self) -> None:
        """Write what finished (one transaction: labels, grades, label vectors, new context encodings, a job's
        counts), after the LLM clients' journals (labels never outrun their cost); then count it."""
        for c in self.clients:
            c.fold()
        if self.finished:
            done = list(self.finished)
            if self.sink is not None:  # a Ray worker: to its result shard, not the store
                self.sink(done)
                for enc in self.parts.encoders:  # a read-only snapshot keeps no encodings
                    enc.take_fresh()
            else:
                self._write(done)
            self.finished.clear()  # at once: an interrupt from here on must not write or count them twice
            for r in done:
                self.summary.count(r)
            s = self.summary
            self.bar.update(len(done), f"{s.explained} labelled, " + (f"{s.carried} carried, " if s.carry_from else "")
                            + (f"{s.graded} graded (earlier labels), " if s.graded else "")
                            + f"{s.skipped} skipped, {s.failed} failed")
        self.last_commit = time.monotonic()
        if self.on_flush is not None:
            self.on_flush(self.summary)

    def _write(self, done: list) -> None:
        d, run_id = self.dictionary, self.run.llm.run_id
        labels = [x for x in done if isinstance(x, FeatureLabel)]
        grades = [x for x in done if isinstance(x, Grades)]
        after = copy.deepcopy(self.summary)  # the counts once these are in: a job's ledger row, same commit
        for r in done:
            after.count(r)
        with self.store.transaction() as w:
            written = w.labels.add_labels(d.dictionary_id, labels, run_id=run_id)
            if d.kind != "gold":  # calibration's planted features are never searched
                index_labels(w, d.dictionary_id, written)
            w.labels.add_grades(grades, run_id=run_id)
            for enc in self.parts.encoders:  # the context encoding, paid once per store
                w.vectors.add_context_vectors(d.corpus_id, ENCODING, enc.take_fresh())
            w.ledger.job_progress(run_id, {**after.to_dict(), "failed_grades": after.failed_grades})

    def _due(self) -> bool:
        return (len(self.finished) >= self.run.flush_every
                or time.monotonic() - self.last_commit >= self.run.flush_seconds)

    async def produce(self) -> None:
        """Sampled features into the queue, a batch at a time (sampled on a thread: the store reads and numpy
        release the GIL), then one end marker per worker."""
        for i in self.feed.batches():
            if self.stop.is_set():
                break
            for item in await asyncio.to_thread(self.feed.items, i, self.store):
                if self.stop.is_set():
                    break
                await self.queue.put(item)
        for _ in range(self.workers):  # a worker that stopped drained the queue: there is room
            await self.queue.put(None)

    async def admit(self) -> bool:
        """May one more feature start? (No, once a budget is reached.)"""
        if self.stop.is_set():
            return False
        why = await call(self.run.budget.reached, self.clients, self.started, time.monotonic() - self.t0)
        if why is not None:
            self.summary.stopped = why
            self.stop.set()
            return False
        self.started += 1
        return True

    async def work(self) -> None:
        """LLM parts: one feature at a time (this is one of `concurrency` workers)."""
        while (item := await self.queue.get()) is not None:
            if not await self.admit():
                continue  # drain to the end marker: the producer must never block on a full queue
            self.finished.append(await do_item(item, self.parts))
            if self._due():
                self.commit()

    async def work_batches(self) -> None:
        """Offline parts: what the queue holds, up to a batch, at once."""
        end = False
        while not end:
            got = [await self.queue.get()]
            while len(got) < self.run.sample_batch and not self.queue.empty():
                got.append(self.queue.get_nowait())
            end = None in got
            batch = [x for x in got if x is not None and await self.admit()]
            for i in range(0, len(batch), self.run.flush_every):
                self.finished.extend(await do_batch(batch[i:i + self.run.flush_every], self.parts))
                self.commit()


def score_text(store: Store, dictionary: Dictionary, feature: int, text: str, run: LabelRun | None = None,
               author: str = "given") -> tuple[FeatureSample, list[Score]]:
    """Grade any text (a human's label, another model's) as the label of one feature, on the same
    held-out windows `label` grades its own explanations on (`run`: scorers, sampler, seed, models).
    Nothing is written to the store but the LLM calls' cache and ledger rows."""
    run = run or LabelRun(scorers=("simulation",))
    if not text.strip():
        raise UsageError("the explanation is empty")
    sample = Sampler(store, dictionary, run.sampler, run.seed).sample(feature)
    if sample.status != "ok":
        raise LabelError(f"feature {feature} cannot be scored: {sample.reason}")
    e = Explanation(dictionary=dictionary.name, feature=feature, text=text, explainer=author, prompt_hash="",
                    sampler=run.sampler, seed=run.seed, created_at=_now())
    grade = [s for s in run.scorers if not isinstance(s, str)] + make_scorers(
        [s for s in run.scorers if isinstance(s, str)], store, dictionary, run.scorer_model, run.llm, run.scoring)

    async def go():
        try:
            return await asyncio.gather(*(grade_one(s, sample, e) for s in grade))
        finally:
            for c in clients_of(*grade):
                await c.aclose()

    return sample, list(run_sync(go()))

