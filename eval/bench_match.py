"""Matching dictionaries at scale: `autointerp match` of a 2^20-feature dictionary against a retrained stand-in
(a permuted, noised copy: 5% of firings dropped, 5% spurious ones added, values scaled 1 +- 0.2, output
directions perturbed), beside the same at 16,384 features, same corpus, same run.

    python eval/bench_match.py [--width 1048576] [--seqs 16384] [--dim 64] [--out /tmp/bench_match] [--keep]

Builds the synthetic caches of eval/bench_scale.py (heavy-tailed firing, ~32 latents a token, ~1M tokens),
gives each dictionary random output directions of `--dim`, makes the retrained copies, then runs `match` as
a user would, each in its own process (peak RSS its own), and prints wall time, ms per live feature, peak
RSS, and the share of live features whose partner was recovered, per method.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import ROWS, build, run  # noqa: E402


def prepare(store_path: Path, name: str, copy: str, dim: int) -> np.ndarray:
    from autointerp.ingest.synthetic import add_retrained_copy
    from autointerp.store import Store

    with Store(store_path) as s:
        d = s.dictionary(name)
        t = time.perf_counter()
        with s.transaction() as w:
            w.activations.add_directions(d.dictionary_id, np.random.default_rng(0).standard_normal((d.width, dim)))
        perm = add_retrained_copy(s, d, copy, seed=1)
        print(f"directions and retrained copy of {name}: {time.perf_counter() - t:.0f} s", flush=True)
    return perm


def recovered(store_path: Path, a: str, b: str, perm: np.ndarray) -> dict:
    from autointerp.store import Store

    with Store(store_path, read_only=True) as s:
        da, db = s.dictionary(a), s.dictionary(b)
        live = np.flatnonzero(s.activations.firing_counts(db.dictionary_id) > 0)
        out = {}
        for method in s.matches.match_methods(da.dictionary_id, db.dictionary_id):
            m = s.matches.pairs(da.dictionary_id, db.dictionary_id, method, features=live)
            out[method] = round(float((perm[m["from_feature"]] == m["to_feature"]).sum() / len(live)), 4)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=2**20)
    ap.add_argument("--seqs", type=int, default=16_384)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_match"))
    ap.add_argument("--keep", action="store_true", help="reuse the store of an earlier run")
    a = ap.parse_args()
    store = a.out / "match.duckdb"
    S = ["--store", str(store)]
    if not a.keep:
        shutil.rmtree(a.out, ignore_errors=True)
        a.out.mkdir(parents=True)
        build(a.out, a.width, a.seqs)
        run("ingest 2^20 (delphi)", ["ingest", "delphi", str(a.out / "cache" / "wide"), *S, "--dictionary", "wide",
                                     "--json"], a.width, store)
        run("ingest 16k (delphi)", ["ingest", "delphi", str(a.out / "cache" / "narrow"), *S, "--dictionary",
                                    "narrow", "--json"], 16_384, store)
    perms = {}
    for name in ("narrow", "wide"):
        if not a.keep:
            perms[name] = prepare(store, name, f"{name}2", a.dim)
            np.save(a.out / f"{name}.perm.npy", perms[name])
        else:
            perms[name] = np.load(a.out / f"{name}.perm.npy")
    figures = {}
    for name, width in (("narrow", 16_384), ("wide", a.width)):
        row = run(f"match {name} -> {name}2 ({width:,} x {width:,})",
                  ["match", *S, "--from", name, "--to", f"{name}2", "--json"], None, store)
        live = row["result"]["live_to"]
        row["per"], row["ms_per"] = live, round(row["wall_s"] * 1000 / live, 3)
        figures[name] = {"live": live, "wall_s": row["wall_s"], "ms_per_live": row["ms_per"],
                         "peak_rss_mb": row["peak_rss_mb"], "recovered": recovered(store, name, f"{name}2", perms[name]),
                         "methods": row["result"]["methods"]}
    print(json.dumps(figures, indent=1))
    n, w = figures["narrow"], figures["wide"]
    print(f"ms per live feature: 16k {n['ms_per_live']}, 2^20 {w['ms_per_live']} "
          f"(ratio {w['ms_per_live'] / n['ms_per_live']:.2f}); peak RSS {n['peak_rss_mb']} / {w['peak_rss_mb']} MB")
    (a.out / "figures.json").write_text(json.dumps({"rows": ROWS, "figures": figures}, indent=1))


if __name__ == "__main__":
    main()
