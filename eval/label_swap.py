"""Label swap: can a scorer tell a feature's own label from another feature's?

For N features (random, among those the sampler can label), explain each with the offline explainer,
then score every feature's own explanation and a random other feature's explanation (a derangement:
never its own) on the feature's held-out set, with each scorer. Reports, per scorer, the fraction of
features where own > swapped (a tie counts half; identical texts are counted apart), and the means.
A scorer that cannot tell a feature's label from another's is not a scorer: ~0.5 means chance.

On a dictionary with output tokens (the logit lens of each feature's output direction, stored by capture on
a causal LM), the offline explainer runs twice on the same features and the same swaps: from the inputs
alone, and naming the promoted tokens the text bears out (explain/offline.py). Each gets its own table,
with how many labels the outputs changed, so the two separations compare side by side.

    python eval/label_swap.py --store demo.duckdb [--dictionary NAME] [--n 200] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np

from quality import derangement, pick_samples, swap_stats

from autointerp.explain import Background, OfflineExplainer
from autointerp.score import make_scorers
from autointerp.store import open_store


def label_swap(store, dictionary, n: int, seed: int, scorers: list[str]) -> list[dict]:
    """One result per explainer variant: inputs only, and (when the dictionary has them) with output tokens."""
    rng = np.random.default_rng(seed)
    samples = pick_samples(store, dictionary, n, seed, rng)
    if len(samples) < 2:
        raise SystemExit(f"only {len(samples)} labellable features: nothing to swap")
    other = derangement(len(samples), rng)
    bg = Background.from_store(store.activations, dictionary.corpus_id)
    variants = [("inputs only", OfflineExplainer(bg), samples)]
    if store.activations.has_output_tokens(dictionary.dictionary_id):
        outputs = store.activations.output_tokens(dictionary.dictionary_id, [s.feature for s in samples])
        variants.append(("with output tokens", OfflineExplainer(bg, outputs=True),
                         [replace(s, outputs=outputs.get(s.feature)) for s in samples]))
    grade = make_scorers(scorers, store, dictionary)
    results, first = [], None
    for name, explainer, smp in variants:
        expl = [explainer.explain(s) for s in smp]
        first = first or expl
        out = {"dictionary": dictionary.name, "kind": dictionary.kind, "explainer": name, "n": len(smp), "seed": seed,
               "identical_texts": int(sum(expl[i].text == expl[j].text for i, j in enumerate(other))),
               "labels_changed": int(sum(a.text != b.text for a, b in zip(expl, first))), "scorers": {}}
        for g in grade:
            t = time.perf_counter()
            own = [g.score(s, expl[i]).value for i, s in enumerate(smp)]
            swapped = [g.score(s, expl[other[i]]).value for i, s in enumerate(smp)]
            out["scorers"][g.name] = {**swap_stats(own, swapped, np.random.default_rng(seed)),
                                      "seconds": round(time.perf_counter() - t, 1)}
        results.append(out)
    return results


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
    for r in res:
        print(f"{r['dictionary']} ({r['kind']}), offline explainer {r['explainer']}: {r['n']} features, seed "
              f"{r['seed']}, {r['identical_texts']} swaps with identical text"
              + (f", {r['labels_changed']} labels differ from inputs only" if r["explainer"] != "inputs only" else ""))
        print(f"{'scorer':<12}{'pairs':>6}{'own>swapped':>13}{'mean own':>10}{'mean swapped':>14}  95% CI of mean diff")
        for name, g in r["scorers"].items():
            print(f"{name:<12}{g['pairs']:>6}{g['own_beats_swapped']:>13.3f}{g['mean_own']:>10.3f}"
                  f"{g['mean_swapped']:>14.3f}  [{g['mean_difference_95ci'][0]:.3f}, {g['mean_difference_95ci'][1]:.3f}]")


if __name__ == "__main__":
    main()
