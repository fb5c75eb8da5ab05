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

from autointerp.explain import make_explainer
from autointerp.records import SamplerConfig
from autointerp.sample import Sampler
from autointerp.score import make_scorers
from autointerp.store import open_store


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation with no fixed point (n >= 2)."""
    while True:
        p = rng.permutation(n)
        if not (p == np.arange(n)).any():
            return p


def label_swap(store, dictionary, n: int, seed: int, scorers: list[str]) -> dict:
    rng = np.random.default_rng(seed)
    sampler = Sampler(store, dictionary, SamplerConfig(), seed)
    live = np.flatnonzero(store.firing_counts(dictionary.dictionary_id) > 0)
    pool = rng.permutation(live)
    samples = []
    for i in range(0, len(pool), max(n, 64)):  # draw until n features the sampler can label
        samples += [s for s in sampler.sample_many(pool[i:i + max(n, 64)]) if s.status == "ok"]
        if len(samples) >= n:
            break
    rng.shuffle(samples)
    samples = samples[:n]
    if len(samples) < 2:
        raise SystemExit(f"only {len(samples)} labellable features: nothing to swap")
    explainer = make_explainer("offline", store, dictionary)
    expl = [explainer.explain(s) for s in samples]
    other = derangement(len(samples), rng)
    graders = make_scorers(scorers, store, dictionary)
    out = {"dictionary": dictionary.name, "kind": dictionary.kind, "n": len(samples), "seed": seed,
           "identical_texts": int(sum(expl[i].text == expl[j].text for i, j in enumerate(other))), "scorers": {}}
    for g in graders:
        t = time.perf_counter()
        own, swapped = [], []
        for i, s in enumerate(samples):
            a, b = g.score(s, expl[i]), g.score(s, expl[other[i]])
            if a.status == "ok" and b.status == "ok":
                own.append(a.value)
                swapped.append(b.value)
        own_a, sw_a = np.array(own), np.array(swapped)
        diff = own_a - sw_a
        boot = rng.choice(diff, (2000, len(diff))).mean(1) if len(diff) else np.zeros(1)
        out["scorers"][g.name] = {
            "pairs": len(own), "undefined": len(samples) - len(own),
            "own_beats_swapped": round(float(((diff > 0) + 0.5 * (diff == 0)).mean()), 3) if len(diff) else None,
            "mean_own": round(float(own_a.mean()), 3) if len(own) else None,
            "mean_swapped": round(float(sw_a.mean()), 3) if len(own) else None,
            "mean_difference_95ci": [round(float(x), 3) for x in np.percentile(boot, [2.5, 97.5])],
            "seconds": round(time.perf_counter() - t, 1)}
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
