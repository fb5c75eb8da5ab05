"""`job run --executor ray`: the features of a job sharded across a Ray cluster's workers.

The driver (the job process, which alone writes the store):
1. merges what earlier Ray runs left in `<store>.ray/` (result shards, worker journals: a crashed run's
   labels and paid replies are kept, never bought again);
2. works out the features to do (incremental, as a local run), checkpoints the store and copies it to
   `<store>.ray/<run>/snapshot.duckdb`: the read-only snapshot the workers read windows, contexts and
   cached replies from (on a multi-machine cluster put `<store>.ray` on a shared filesystem, see
   `snapshot_dir`);
3. starts one `Coordinator` actor, which holds the job's rate limits (requests and tokens per minute)
   and budget (dollars, tokens, features, time) for every worker at once;
4. runs one task per shard of features. A worker labels its shard with the ordinary pipeline, reading
   the snapshot, journalling every LLM reply to `journal-<shard>.jsonl` as it arrives, asking the
   coordinator before each call and each feature, and writes its labels to `labels-<shard>.pkl`;
5. merges every shard's journal and labels into the store in one transaction, then removes them.

Rate limits hold across workers (one set of buckets, in the actor); calls in flight are bounded per
worker (`max_in_flight` each). A budget stops every worker: the features in flight finish.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..llm.journal import CallLog, read_journal
from ..llm.limits import AdaptiveLimit, LimitConfig, RateLimiter
from ..pipeline import Budget, RunSummary
from ..records import FeatureLabel, Grades
from ..search import index_labels
from ..store import Store


def results_root(store_path: Path, snapshot_dir: str | Path | None = None) -> Path:
    """Where a store's Ray runs keep their snapshot and result shards: one folder per store, also under
    a `snapshot_dir` that several stores share."""
    if not snapshot_dir:
        return Path(f"{store_path}.ray")
    store_path = Path(store_path).resolve()
    return Path(snapshot_dir) / f"{store_path.name}-{hashlib.sha256(str(store_path).encode()).hexdigest()[:12]}"


# -- shared by all workers ------------------------------------------------------------------------------

class Coordinator:
    """The job's limits and budget, for every worker (a Ray async actor: calls wait concurrently)."""

    def __init__(self, limits: LimitConfig, budget: Budget, started_at: float) -> None:
        self.config, self.budget, self.started_at = limits, budget, started_at  # started_at: time.time()
        self.limiter: RateLimiter | None = None  # made in the actor's event loop
        self.usd, self.tokens, self.started = 0.0, 0, 0
        self.stopped: str | None = None  # the budget reached, once one is

    def _lim(self) -> RateLimiter:
        if self.limiter is None:
            self.limiter = RateLimiter(self.config)
        return self.limiter

    async def acquire(self, input_tokens: int, output_tokens: int) -> None:
        await self._lim().acquire(input_tokens, output_tokens)

    def done(self, reserved: int, used: int, headers: dict) -> None:
        self._lim().done(reserved, used, headers)  # unused output tokens back; an empty bucket pauses everyone

    def throttled(self, retry_after: float | None) -> None:
        self._lim().throttled(retry_after)  # a 429 anywhere: every worker waits what the server asked

    def start_feature(self, usd: float, tokens: int) -> str | None:
        """Add a worker's spending since it last asked; None if it may start a feature (counted), else why not."""
        self.usd += usd
        self.tokens += tokens
        if self.stopped is None:
            self.stopped = self.budget.exceeded(self.usd, self.tokens, self.started, time.time() - self.started_at)
        if self.stopped is None:
            self.started += 1
        return self.stopped

    def state(self) -> dict:
        return {"usd": self.usd, "tokens": self.tokens, "started": self.started, "stopped": self.stopped,
                "throttles": self.limiter.throttles if self.limiter else 0}


class _RemoteLimiter:
    """The worker side of the coordinator's limiter: requests and tokens shared, calls in flight local."""

    def __init__(self, coordinator, config: LimitConfig) -> None:
        self.coordinator, self.config = coordinator, config
        self.slots = AdaptiveLimit(config.max_in_flight)
        self.output = None  # refunds happen in the actor

    async def acquire(self, input_tokens: int, output_tokens: int) -> None:
        await self.coordinator.acquire.remote(input_tokens, output_tokens)

    def throttled(self, retry_after: float | None) -> None:
        self.slots.throttled()
        self.coordinator.throttled.remote(retry_after)

    def done(self, reserved_output: int, used_output: int, headers: dict) -> None:
        self.slots.success()
        self.coordinator.done.remote(reserved_output, used_output, headers)


class _RemoteBudget:
    """Before each feature: report this worker's spending since the last feature, ask the coordinator."""

    def __init__(self, coordinator) -> None:
        self.coordinator, self.usd, self.tokens = coordinator, 0.0, 0

    async def reached(self, clients, started: int, elapsed: float) -> str | None:
        usd, tokens = sum(c.spent_usd for c in clients), sum(c.spent_tokens for c in clients)
        d_usd, d_tok = usd - self.usd, tokens - self.tokens
        self.usd, self.tokens = usd, tokens
        return await self.coordinator.start_feature.remote(d_usd, d_tok)


class _ShardLog(CallLog):
    """A worker's journal: reads the snapshot's cache, appends replies to its shard's journal file, and
    never writes the store (the driver merges the file)."""

    def __init__(self, store: Store, path: Path) -> None:
        self.store, self.path = store, path
        self._cache, self._calls, self._fh = {}, [], None
        self._recovered = True  # a worker recovers nothing: the driver merged what crashed runs left

    def fold(self) -> None:
        return None

    def recover(self) -> int:
        return 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass
class _Hooks:
    out: Path
    shard: int
    coordinator: object
    logs: int = 0

    def log(self, store: Store) -> CallLog:
        self.logs += 1  # the explainer's and the scorers' clients: a journal each
        return _ShardLog(store, self.out / f"journal-{self.shard}-{self.logs}.jsonl")

    def limiter(self, config: LimitConfig) -> _RemoteLimiter:
        return _RemoteLimiter(self.coordinator, config)


def label_shard(snapshot: str, out_dir: str, shard: int, dictionary: str, features: list[int], cfg_text: str,
                run_id: str, coordinator, force: bool = False) -> dict:
    """One worker's shard: labelled (or graded) from the snapshot; labels, grades and journal written beside it."""
    from dataclasses import replace

    from ..pipeline import label
    from .config import parse_config

    cfg = parse_config(cfg_text)
    out = Path(out_dir)
    outcomes: list = []
    with Store(snapshot, read_only=True) as store:
        d = store.dictionary(dictionary)
        # the coordinator's budget, asked before each feature (a BudgetCheck whose answer is awaited)
        run = replace(cfg.with_run_id(run_id, hooks=_Hooks(out, shard, coordinator)), features=features, force=force,
                      budget=_RemoteBudget(coordinator))
        summary = label(store, d, run, sink=outcomes.extend)
        # the activations these labels were made from: the snapshot's, whatever the store holds at merge time
        hashes = store.activations.activation_hashes(d.dictionary_id, features)
    tmp = out / f"labels-{shard}.pkl.tmp"
    tmp.write_bytes(pickle.dumps({"labels": [x for x in outcomes if isinstance(x, FeatureLabel)],
                                  "grades": [x for x in outcomes if isinstance(x, Grades)], "act_hash": hashes}))
    tmp.replace(out / f"labels-{shard}.pkl")  # whole or absent
    summary.cost = []
    return {"shard": shard, "host": os.uname().nodename, "pid": os.getpid(), "summary": summary.to_dict()}


# -- the driver -------------------------------------------------------------------------------------------

def merge_results(store: Store, root: Path) -> dict:
    """Merge every result shard and worker journal under `root` (this store's Ray runs; the caller holds
    the job lock, so none is running) into the store in one transaction, then remove the runs' folders.
    Journals first: labels never land without the replies they were made from. Each label keeps the
    activation fingerprint of the snapshot it was made from, so a label made before a re-ingest is
    redone by the next run rather than taken as current."""
    journals = sorted(root.glob("*/journal-*.jsonl"))
    shards = sorted(root.glob("*/labels-*.pkl"))
    by_dict: dict[tuple[str, str], tuple[list[FeatureLabel], dict[int, int]]] = {}  # (dictionary, run)
    grades: list = []
    for p in shards:  # <root>/<run id>/labels-<shard>.pkl
        doc = pickle.loads(p.read_bytes())  # written by our workers in this store's own folder
        grades.append((p.parent.name, doc.get("grades", [])))
        for lab in doc["labels"]:
            labels, hashes = by_dict.setdefault((lab.dictionary, p.parent.name), ([], {}))
            labels.append(lab)
            hashes[lab.feature] = doc["act_hash"].get(lab.feature)
    cache, calls = [], []
    for p in journals:
        c, k = read_journal(p)
        cache += c
        calls += k
    if journals or shards:
        with store.transaction() as w:
            w.ledger.add_llm_records(cache, calls)
            for (name, run_id), (labels, hashes) in by_dict.items():
                did = store.dictionary(name).dictionary_id
                written = w.labels.add_labels(did, labels, act_hashes=hashes, run_id=run_id)
                index_labels(w, did, written)  # search sees them too
            for run_id, got in grades:
                w.labels.add_grades(got, run_id=run_id)
        store.ledger.forget_keys()  # new cache keys: re-read on next use
    if root.exists():
        for run in root.iterdir():  # merged: the runs' folders (and a crashed run's snapshot) can go
            if run.is_dir():
                shutil.rmtree(run, ignore_errors=True)
    return {"journals": len(journals), "shards": len(shards), "labels": sum(len(v[0]) for v in by_dict.values()),
            "grades": sum(len(g) for _, g in grades)}


def run_on_ray(store: Store, d, todo: list[int], cfg, run_id: str, summary: RunSummary, *, force: bool,
               address: str | None, snapshot_dir: str | None, shards_per_worker: int = 2) -> None:
    """Label `todo` on a Ray cluster; each shard's summary is merged into `summary`."""
    import ray

    root = results_root(store.path, snapshot_dir)
    run_dir = root / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    snapshot = run_dir / "snapshot.duckdb"  # whole: every transaction ends with the file folded and closed
    shutil.copyfile(store.path, snapshot)
    shards = []
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 configure_logging=False)
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        n_shards = max(1, min(len(todo), workers * shards_per_worker))
        size = math.ceil(len(todo) / n_shards) if todo else 0
        run = cfg.run
        limits = run.llm.limits(run.explainer if isinstance(run.explainer, str) else "")
        coordinator = ray.remote(Coordinator).options(max_concurrency=1000).remote(limits, run.budget, time.time())
        task = ray.remote(label_shard)
        refs = [task.remote(str(snapshot), str(run_dir), i, d.name, todo[i * size:(i + 1) * size], cfg.text, run_id,
                            coordinator, force) for i in range(n_shards) if todo[i * size:(i + 1) * size]]
        for part in ray.get(refs):
            got = RunSummary.from_dict(part["summary"])
            got.features = got.already_done = got.without_import = 0  # the driver counts the selection; a shard its part
            summary.merge(got)
            shards.append({"shard": part["shard"], "host": part["host"], "pid": part["pid"],
                           "explained": got.explained, "graded": got.graded, "skipped": got.skipped,
                           "failed": got.failed})
        state_ref = coordinator.state.remote()
        state = ray.get(state_ref)
        summary.stopped = state["stopped"]
        summary.extra["coordinator"] = state
    finally:
        ray.shutdown()
        snapshot.unlink(missing_ok=True)
        summary.extra["shards"] = shards
        summary.extra["merged"] = merge_results(store, root)
        shutil.rmtree(run_dir, ignore_errors=True)
