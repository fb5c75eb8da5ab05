"""What readers beside a writer cost, on a store of 2^20 labelled features (the store `eval/bench_scale.py` makes,
or any store with one labelled dictionary: `--store`).

    python eval/bench_service.py --store /tmp/bench_scale/import.duckdb [--dictionary wide] [--steps 20]

Measured side by side in one run, on a copy of the store:

1. a commit of a label step (64 labels with a grade, as `label` commits them), as the store commits now
   (the file opened for writing for the transaction only, so readers in other processes can read between
   commits: store/db.py, store/gate.py) and as it did before (one read-write connection held for the whole
   run, no reader possible), per commit;
2. a reader in another process (feature pages: one feature's labels and statistics) while that writer commits
   a step every second, against the same reader with no writer: latency p50 / p99 / max;
3. the server's refresh after a commit: the feature index and the label search index taking in 64 changed
   labels, against building them anew (what a restart costs);
4. opening the store for reading (the first read), and the disk the lock files and change log take.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autointerp.records import Explanation, FeatureLabel, SamplerConfig, Score  # noqa: E402
from autointerp.store import Store  # noqa: E402
from autointerp.store.db import Transaction  # noqa: E402
from autointerp.store.labels import LabelRepo  # noqa: E402

STEP = 64


def step_labels(dictionary: str, features: list[int], seed: int) -> list[FeatureLabel]:
    """A commit's worth of labels, as an LLM run writes them (one grade each)."""
    sampler = SamplerConfig()
    rng = np.random.default_rng(seed)
    out = []
    for f in features:
        e = Explanation(dictionary=dictionary, feature=f, text=f"bench label {seed} for feature {f}",
                        explainer="bench-writer", prompt_hash="bench", sampler=sampler, seed=0)
        s = Score(scorer="simulation", scorer_version="bench", status="ok", value=float(rng.random()),
                  interval=(0.1, 0.9), n_windows=20, n_tokens=640)
        out.append(FeatureLabel(dictionary=dictionary, feature=f, explainer="bench-writer", prompt_hash="bench",
                                sampler=sampler, seed=0, status="ok", explanations=((e, (s,)),)))
    return out


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def commits(path: Path, dictionary: str, steps: int, held: bool, seed0: int = 0) -> list[float]:
    """Seconds per commit of a label step: now (`held=False`) or with one read-write connection held."""
    times = []
    if held:
        class _Db:  # what a Transaction asks of its database: the path and how to word a failure
            def __init__(self, p):
                self.path = p

            def error(self, e, doing="writing to"):
                return RuntimeError(str(e))

        con = duckdb.connect(str(path))
        db = _Db(path)
        width = con.execute("SELECT width FROM dictionaries WHERE name = ?", [dictionary]).fetchone()[0]
        did = con.execute("SELECT dictionary_id FROM dictionaries WHERE name = ?", [dictionary]).fetchone()[0]
        rng = np.random.default_rng(seed0)
        for i in range(steps):
            feats = sorted(rng.choice(width, STEP, replace=False).tolist())
            t = time.perf_counter()
            con.execute("BEGIN")
            tx = Transaction(db, con)
            LabelRepo(db, tx).add_labels(did, step_labels(dictionary, feats, seed0 + i), run_id="bench")
            tx._close(True)
            con.execute("COMMIT")
            times.append(time.perf_counter() - t)
        con.close()
        return times
    with Store(path) as s:
        d = s.dictionary(dictionary)
        rng = np.random.default_rng(seed0)
        for i in range(steps):
            feats = sorted(rng.choice(d.width, STEP, replace=False).tolist())
            t = time.perf_counter()
            with s.transaction() as w:
                w.labels.add_labels(d.dictionary_id, step_labels(d.name, feats, seed0 + i), run_id="bench")
            times.append(time.perf_counter() - t)
    return times


READER = r"""
import json, sys, time
import numpy as np
from autointerp.store import Store
path, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = Store(path, read_only=True)
d = s.dictionary(name)
rng = np.random.default_rng(1)
lat = []
t_end = time.monotonic() + seconds
while time.monotonic() < t_end:
    f = int(rng.integers(d.width))
    t = time.perf_counter()
    s.labels.find(d.dictionary_id, [f], candidates=True)
    s.activations.feature_stats(d.dictionary_id, [f])
    lat.append(time.perf_counter() - t)
s.close()
print(json.dumps(lat))
"""


def reader_beside(path: Path, dictionary: str, seconds: float, writer: bool) -> dict:
    """Latency of a reader process's feature-page reads for `seconds`, with a writer committing a step a
    second beside it (or none)."""
    proc = subprocess.Popen([sys.executable, "-c", READER, str(path), dictionary, str(seconds)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    commit_times = []
    if writer:
        with Store(path) as s:
            d = s.dictionary(dictionary)
            rng = np.random.default_rng(7)
            t_end = time.monotonic() + seconds
            i = 0
            while time.monotonic() < t_end:
                feats = sorted(rng.choice(d.width, STEP, replace=False).tolist())
                t = time.perf_counter()
                with s.transaction() as w:
                    w.labels.add_labels(d.dictionary_id, step_labels(d.name, feats, 1000 + i), run_id="bench")
                commit_times.append(time.perf_counter() - t)
                i += 1
                time.sleep(max(0.0, 1.0 - (time.perf_counter() - t)))
    out, _ = proc.communicate()
    lat = json.loads(out)
    return {"reads": len(lat), "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3, "max_ms": max(lat) * 1e3,
            "commits": len(commit_times), "commit_p50_ms": pct(commit_times, 50) * 1e3 if commit_times else None}


def refresh(path: Path, dictionary: str) -> dict:
    """The server's indexes taking in one commit of 64 labels, against building them anew."""
    from autointerp.export.browser import Browser

    out = {}
    with Store(path, read_only=True) as s:
        b = Browser(s, dictionary)
        d = b.dictionary(dictionary)
        t = time.perf_counter()
        b.index(d)
        out["feature index, built (s)"] = time.perf_counter() - t
        t = time.perf_counter()
        b.labels()
        out["label search index, built (s)"] = time.perf_counter() - t
        commits(path, dictionary, 1, held=False, seed0=99)  # a writer (this process) commits a step
        t = time.perf_counter()
        changed = b.refresh()
        out["refresh after a 64-label commit (s)"] = time.perf_counter() - t
        out["refreshed"] = changed and dict(b.refreshed)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--dictionary", default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_service"))
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    copy = a.work / "store.duckdb"
    shutil.copyfile(a.store, copy)
    with Store(copy) as s:  # migrated once (a store from an earlier autointerp)
        d = s.dictionary(a.dictionary)
        n_labels = s.labels.labelled_count(d.dictionary_id)
    name = d.name
    print(f"store: {a.store} ({a.store.stat().st_size / 1e9:.2f} GB), dictionary {name}: {d.width:,} features, "
          f"{n_labels:,} labelled", flush=True)

    t = time.perf_counter()
    with Store(copy, read_only=True) as s:
        s.dictionary(name)
        first = time.perf_counter() - t
    print(f"open for reading + first read: {first * 1e3:.0f} ms", flush=True)

    now = commits(copy, name, a.steps, held=False, seed0=0)
    before = commits(copy, name, a.steps, held=True, seed0=10_000)
    now2 = commits(copy, name, a.steps, held=False, seed0=20_000)  # again after: the order cannot flatter it
    now_all = now + now2
    print(f"commit of {STEP} labels, {a.steps * 2} commits now, {a.steps} before (median): "
          f"now {statistics.median(now_all) * 1e3:.0f} ms (p90 {pct(now_all, 90) * 1e3:.0f}), "
          f"before {statistics.median(before) * 1e3:.0f} ms (p90 {pct(before, 90) * 1e3:.0f}): "
          f"{statistics.median(now_all) / statistics.median(before):.2f}x", flush=True)

    alone = reader_beside(copy, name, a.seconds, writer=False)
    beside = reader_beside(copy, name, a.seconds, writer=True)
    for label, r in (("reader alone", alone), ("reader beside a writer (a commit a second)", beside)):
        print(f"{label}: {r['reads']} reads, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
              f"max {r['max_ms']:.0f} ms" + (f"; writer: {r['commits']} commits, p50 {r['commit_p50_ms']:.0f} ms"
                                              if r["commits"] else ""), flush=True)
    print(f"reader p50 beside / alone: {beside['p50_ms'] / alone['p50_ms']:.2f}x, "
          f"p99: {beside['p99_ms'] / alone['p99_ms']:.2f}x", flush=True)

    for k, v in refresh(copy, name).items():
        print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}", flush=True)
    with Store(copy, read_only=True) as s:
        changes = s.sql("SELECT count(*) FROM label_changes")[0][0]
    locks = sum(p.stat().st_size for p in a.work.glob("store.duckdb.*.lock"))
    print(f"change log: {changes} rows; lock files: {locks} bytes", flush=True)
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
