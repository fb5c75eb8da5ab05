"""Carrying labels to a retrained SAE: how many explainer calls `label --carry-from` saves, and what `diff`
says changed.

    python eval/carry_retrained.py [--width 1024] [--k 32] [--max-tokens 60000] [--out /tmp/carry_retrained]

Trains two TopK SAEs on the same hook of the bundled all-MiniLM-L6-v2 over the bundled corpus with
`eval/train_sae.py`, seeds 0 and 1 (a real retraining: other initialisation, other batches), captures
both into one store, labels the first (offline explainer; embedding and simulation grades), then labels
the second with `--carry-from` the first, and prints: live features, pairs the match found at
similarity >= 0.8, labels carried (no explainer call), carried labels rejected (graded too low, explained
anew) and features explained from scratch, so the explainer calls saved; the grades of carried labels
beside the explained ones; and `diff --dictionaries`'s counts. Each step runs through the CLI.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "autointerp" / "data" / "stdlib_docs.txt"
HOOK = "encoder.layer.2.output"


def cli(*args: str) -> dict:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "autointerp", *args, "--json"], capture_output=True, text=True)
    if out.returncode not in (0, 22):
        sys.exit(f"autointerp {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    doc = json.loads(out.stdout)
    print(f"  {args[0]} {' '.join(a for a in args[1:] if not a.startswith('/'))[:90]}: "
          f"{time.perf_counter() - t:.0f} s", flush=True)
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=60_000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/carry_retrained"))
    a = ap.parse_args()
    shutil.rmtree(a.out, ignore_errors=True)
    a.out.mkdir(parents=True)
    store = a.out / "carry.duckdb"
    for seed in (0, 1):
        t = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "eval" / "train_sae.py"), "--corpus", str(CORPUS), "--hook", HOOK,
                        "--out", str(a.out / f"sae{seed}"), "--width", str(a.width), "--k", str(a.k),
                        "--max-tokens", str(a.max_tokens), "--seed", str(seed)], check=True, capture_output=True)
        print(f"  trained SAE seed {seed}: {time.perf_counter() - t:.0f} s", flush=True)
        cli("capture", "--corpus", str(CORPUS), "--hook", HOOK, "--sae", str(a.out / f"sae{seed}"), "--store",
            str(store), "--dictionary", f"sae-seed{seed}", "--max-tokens", str(a.max_tokens))
    scorers = ["--scorer", "embedding,simulation"]
    first = cli("label", "--store", str(store), "--dictionary", "sae-seed0", *scorers)
    carried = cli("label", "--store", str(store), "--dictionary", "sae-seed1", "--carry-from", "sae-seed0", *scorers)
    match = cli("match", "--store", str(store), "--from", "sae-seed0", "--to", "sae-seed1")
    changes = cli("diff", "--store", str(store), "--dictionaries", "sae-seed0", "sae-seed1", "--limit", "0")
    co = match["methods"]["coactivation"]
    live = match["live_to"]
    explained_anew = carried["carry_rejected"]
    calls = carried["explained"]  # explainer calls this run made (carried labels made none)
    print(f"\nretrained SAE ({a.width} latents, k {a.k}, {HOOK}, {a.max_tokens:,} tokens), seed 0 -> seed 1:")
    agree = match.get("agreement")
    print(f"  live features of seed 1: {live:,}; paired by co-activation at >= 0.8: {co['matched']:,} "
          f"(median similarity {co['median']})" + ("" if agree is None else
                                                  f"; decoder cosine names the same partner for {agree:.1%}"))
    print(f"  labelled seed 0: {first['explained']:,} explained")
    print(f"  labelled seed 1 with --carry-from: {carried['carried']:,} carried (no explainer call), "
          f"{explained_anew:,} carried but graded too low and explained anew, {calls - explained_anew:,} explained "
          f"from scratch, {carried['skipped']:,} skipped")
    total = carried["carried"] + calls
    print(f"  explainer calls: {calls:,} of {total:,} labelled ({carried['carried'] / max(total, 1):.1%} saved)")
    c = changes["counts"]
    print(f"  diff: {c['added']} added, {c['gone']} gone, {c['relabelled']} relabelled ({c['changed_meaning']} "
          f"changed meaning), {c['grade']} grades moved beyond their intervals, over {c['pairs']} labelled pairs")


if __name__ == "__main__":
    main()
