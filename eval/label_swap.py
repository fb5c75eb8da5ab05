"""Label swap: can a scorer tell a feature's own label from another feature's?

For N features (random, among those the sampler can label), explain each with the offline explainer,
then score every feature's own explanation and a random other feature's explanation (a derangement:
never its own) on the feature's held-out set, with each scorer. Reports, per scorer, the fraction of
features where own > swapped (a tie counts half; identical texts are counted apart), and the means.
A scorer that cannot tell a feature's label from another's is not a scorer: ~0.5 means chance.

    python eval/label_swap.py --store demo.duckdb [--dictionary NAME] [--n 200] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from quality import derangement, pick_samples, swap_stats

from autointerp.explain import make_explainer
from autointerp.score import make_scorers
from autointerp.store import open_store


def label_swap(store, dictionary, n: int, seed: int, scorers: list[str]) -> dict:
    rng = np.random.default_rng(seed)
    samples = pick_samples(store, dictionary, n, seed, rng)
    if len(samples) < 2:
        raise SystemExit(f"only {len(samples)} labellable features: nothing to swap")
    explainer = make_explainer("offline", store, dictionary)
    expl = [explainer.explain(s) for s in samples]
    other = derangement(len(samples), rng)
    out = {"dictionary": dictionary.name, "kind": dictionary.kind, "n": len(samples), "seed": seed,
           "identical_texts": int(sum(expl[i].text == expl[j].text for i, j in enumerate(other))), "scorers": {}}
    for g in make_scorers(scorers, store, dictionary):
        t = time.perf_counter()
        own = [g.score(s, expl[i]).value for i, s in enumerate(samples)]
        swapped = [g.score(s, expl[other[i]]).value for i, s in enumerate(samples)]
        out["scorers"][g.name] = {**swap_stats(own, swapped, rng), "seconds": round(time.perf_counter() - t, 1)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--dictionary")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scorers", default="embedding,simulation")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    with open_store(a.store, read_only=True) as s:
        d = s.dictionary(a.dictionary)
        res = label_swap(s, d, a.n, a.seed, a.scorers.split(","))
    if a.json:
        json.dump(res, sys.stdout)
        print()
        return
    print(f"{res['dictionary']} ({res['kind']}): {res['n']} features, seed {res['seed']}, "
          f"{res['identical_texts']} swaps with identical text")
    print(f"{'scorer':<12}{'pairs':>6}{'own>swapped':>13}{'mean own':>10}{'mean swapped':>14}  95% CI of mean diff")
    for name, r in res["scorers"].items():
        print(f"{name:<12}{r['pairs']:>6}{r['own_beats_swapped']:>13.3f}{r['mean_own']:>10.3f}{r['mean_swapped']:>14.3f}"
              f"  [{r['mean_difference_95ci'][0]:.3f}, {r['mean_difference_95ci'][1]:.3f}]")


if __name__ == "__main__":
    main()
