"""Quality harness: how good are an explainer's labels under a scorer, and what do they cost?

For N features of a store (seeded, among those the sampler can label), this

1. labels them with the chosen explainer and scorers (through the pipeline: cached, priced, written
   to the store, so a later big run reuses them; a rerun relabels them from the cache, free), and
   with the offline explainer as a baseline;
2. prints each scorer's distribution over both explainers' labels (ok / undefined / failed, mean,
   deciles, a histogram);
3. with --scorer-model, also grades the chosen explainer's labels with the offline scorers, so an LLM
   grade can be read beside the offline one;
4. label swap: grades each feature's held-out windows with a random other feature's label (a
   derangement) and reports how often the feature's own label scores higher; ~0.5 is chance;
5. cost per feature, by purpose (explain, simulate, detection, ...), at the price first paid (a rerun
   served from the cache still reports what a fresh run would pay), and per million features;
6. with --sweep 10,20,40,100, the same own-vs-swapped comparison with each scorer judging only that many
   held-out windows per feature (stratified and seeded, as `label --llm-windows N` cuts them), with the
   mean half-width of the own labels' 95% intervals and the cost per feature of each budget: how much
   discrimination a cheaper budget gives up, so the default is chosen on evidence.

    python eval/quality.py --store S --explainer anthropic:claude-haiku-4-5 --scorers simulation \\
        --scorer-model anthropic:claude-haiku-4-5 [--features 50] [--seed 0] [--json]
    python eval/quality.py --store S --loopback      # offline: the scripted loopback model, no key
    python eval/quality.py --store S --loopback --scorers detection,simulation --sweep 10,20,40,100

--loopback starts tests/loopback.py in this process with its scripted model (it names the most-marked
token, simulates 10 on the tokens a label quotes, ...) and points both models at it: what CI runs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

from autointerp.llm import LLMOptions
from autointerp.pipeline import LabelRun, clients_of, grade_one, label
from autointerp.records import Explanation, SamplerConfig
from autointerp.sample import Sampler
from autointerp.score import AdaptiveBudget, ScoringOptions, make_scorers, parse_scorers
from autointerp.store import open_store

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK_MODEL = "anthropic:claude-haiku-4-5"  # priced like the real one; served by the loopback


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation with no fixed point (n >= 2)."""
    while True:
        p = rng.permutation(n)
        if not (p == np.arange(n)).any():
            return p


def pick_samples(store, dictionary, n: int, seed: int, rng: np.random.Generator | None = None) -> list:
    """n samples (in a seeded random order) of features the sampler can label: firing, not too rare."""
    rng = rng or np.random.default_rng(seed)
    sampler = Sampler(store, dictionary, SamplerConfig(), seed)
    pool = rng.permutation(np.flatnonzero(store.activations.firing_counts(dictionary.dictionary_id) > 0))
    samples = []
    for i in range(0, len(pool), max(n, 64)):  # draw until n features the sampler can label
        samples += [s for s in sampler.sample_many(pool[i:i + max(n, 64)]) if s.status == "ok"]
        if len(samples) >= n:
            break
    rng.shuffle(samples)
    return samples[:n]


def swap_stats(own: list[float | None], swapped: list[float | None], rng: np.random.Generator) -> dict:
    """How often own > swapped over the pairs where both are defined (a tie counts half), the means, and
    a bootstrap 95% interval of the mean difference."""
    pairs = [(a, b) for a, b in zip(own, swapped) if a is not None and b is not None]
    if not pairs:
        return {"pairs": 0, "undefined": len(own)}
    a, b = np.array(pairs).T
    diff = a - b
    boot = rng.choice(diff, (2000, len(diff))).mean(1)
    return {"pairs": len(pairs), "undefined": len(own) - len(pairs),
            "own_beats_swapped": round(float(((diff > 0) + 0.5 * (diff == 0)).mean()), 3),
            "mean_own": round(float(a.mean()), 3), "mean_swapped": round(float(b.mean()), 3),
            "mean_difference_95ci": [round(float(x), 3) for x in np.percentile(boot, [2.5, 97.5])]}


def distribution(scores: list[dict]) -> dict:
    """Statuses, mean, deciles and a 10-bin histogram over [-1, 1] of a scorer's values."""
    vals = np.array([s["value"] for s in scores if s["status"] == "ok"], dtype=float)
    out = {st: sum(s["status"] == st for s in scores) for st in ("ok", "undefined", "failed")}
    if len(vals):
        out.update(mean=round(float(vals.mean()), 3),
                   deciles=[round(float(x), 3) for x in np.percentile(vals, [10, 25, 50, 75, 90])],
                   histogram=np.histogram(np.clip(vals, -1, 1), bins=10, range=(-1, 1))[0].tolist())
    return out


async def _grade_all(pairs: list[tuple], clients) -> list:
    try:
        return await asyncio.gather(*(grade_one(g, s, e) for g, s, e in pairs))
    finally:
        for c in clients:
            await c.aclose()


def _grade(scorers, samples, explanations) -> dict[str, list]:
    """Each scorer's grade of explanations[i] on samples[i], LLM calls at once (paced by their client)."""
    pairs = [(g, s, e) for g in scorers for s, e in zip(samples, explanations)]
    clients = clients_of(*scorers)
    got = asyncio.run(_grade_all(pairs, clients))
    out: dict[str, list] = {g.name: [] for g in scorers}
    for (g, _, _), sc in zip(pairs, got):
        out[g.name].append(sc)
    return out


def quality(store, dictionary, *, n: int, seed: int, explainer: str, scorers: tuple[str, ...],
            scorer_model: str | None, llm: LLMOptions, sweep: list[int] = (), options: ScoringOptions = ScoringOptions()
            ) -> dict:
    samples = pick_samples(store, dictionary, n, seed)
    if len(samples) < 2:
        raise SystemExit(f"only {len(samples)} labellable features: nothing to compare")
    feats = np.array([s.feature for s in samples])
    res: dict = {"dictionary": dictionary.name, "features": len(samples), "seed": seed, "explainer": explainer,
                 "scorers": list(scorers), "scorer_model": scorer_model, "labels": {}}
    stored = {}
    for name in dict.fromkeys([explainer, "offline"]):  # the chosen explainer, then the baseline
        # force: labelled again even when stored, so this run's ledger lists every call (cached ones free)
        out = label(store, dictionary, LabelRun(features=feats, explainer=name, scorers=scorers, seed=seed,
                                                scorer_model=scorer_model, llm=llm, concurrency=8, force=True,
                                                scoring=options)).to_dict()
        rows = {r["feature_id"]: r for r in store.labels.find(dictionary.dictionary_id, feats.tolist())
                if (r["explainer"], r["prompt_hash"], r["sampler_hash"], r["seed"])
                == (out["explainer"], out["prompt_hash"], out["sampler_hash"], seed)}
        stored[name] = rows
        res["labels"][out["explainer"]] = {
            "labelled": len(rows), "failed": out["failed"],
            "scores": {sc: distribution([r["scores"][sc] for r in rows.values() if sc in r["scores"]])
                       for sc in scorers}}
        if name == explainer and out.get("run_id"):
            res["cost_per_feature"] = _costs(store, out["run_id"], len(samples))
    own_rows = stored[explainer]
    if options.adaptive:
        res["adaptive"] = adaptive_use(own_rows.values(), scorers)
    kept = [s for s in samples if s.feature in own_rows]
    expl = [Explanation(dictionary=dictionary.name, feature=s.feature, text=own_rows[s.feature]["explanation"],
                        explainer=explainer, prompt_hash="", sampler=s.config, seed=seed) for s in kept]
    rng = np.random.default_rng(seed + 1)
    if scorer_model:  # the same labels under the offline scorers
        offline = _grade(make_scorers(("embedding", "simulation"), store, dictionary, options=options), kept, expl)
        res["offline_scorers"] = {k: distribution([_doc(x) for x in v]) for k, v in offline.items()}
    other = derangement(len(kept), rng)
    swap_opts = dataclasses.replace(llm, run_id=llm.run_id + "-swap")
    swapped = _grade(make_scorers(scorers, store, dictionary, scorer_model, swap_opts, options), kept,
                     [expl[j] for j in other])
    res["label_swap"] = {"identical_texts": int(sum(expl[i].text == expl[j].text for i, j in enumerate(other)))}
    for sc, got in swapped.items():
        own = [own_rows[s.feature]["scores"].get(sc, {}).get("value") for s in kept]
        res["label_swap"][sc] = swap_stats(own, [x.value for x in got], rng)
    if "simulation" in scorers:
        res["simulator_agreement"] = simulator_agreement(store, dictionary, kept, expl, own_rows, scorer_model,
                                                         llm, options)
    if sweep:
        res["sweep"] = window_sweep(store, dictionary, kept, expl, other, scorers, scorer_model, llm, options,
                                    sweep, seed)
    return res


def _agree(a: list, b: list) -> dict:
    pairs = np.array([(x, y) for x, y in zip(a, b) if x is not None and y is not None])
    if len(pairs) < 3:
        return {"pairs": len(pairs)}
    return {"pairs": len(pairs), "pearson": round(float(np.corrcoef(pairs.T)[0, 1]), 3),
            "mean_abs_difference": round(float(np.abs(pairs[:, 0] - pairs[:, 1]).mean()), 3)}


def simulator_agreement(store, dictionary, kept, expl, own_rows, scorer_model, llm, options) -> dict:
    """Do the dense and sparse simulators agree? With a scorer model: the run's simulation grades against
    the other simulator's on the same labels. Offline proxy: the offline simulator's predictions graded
    as they are and as the sparse format can say them (integers 1-10 on the tokens listed, 0 elsewhere)."""
    from autointerp.score import ContextEncoder, metrics
    from autointerp.simulate import OfflineSimulator

    out = {}
    if scorer_model:
        other = "simulate_sparse" if options.simulator == "simulate_json" else "simulate_json"
        got = _grade(make_scorers(("simulation",), store, dictionary, scorer_model,
                                  dataclasses.replace(llm, run_id=llm.run_id + "-other"),
                                  dataclasses.replace(options, simulator=other)), kept, expl)["simulation"]
        mine = [own_rows[s.feature]["scores"]["simulation"]["value"] for s in kept]
        out["llm"] = {"this": options.simulator, "other": other, **_agree(mine, [x.value for x in got])}
    sim = OfflineSimulator(ContextEncoder(store.activations, store.vectors, dictionary.corpus_id))
    dense, sparse = [], []
    for s, e in zip(kept, expl):
        p = sim.predict(e.text, list(s.score)).values
        t = np.concatenate([w.activations for w in s.score])
        flat = np.concatenate(p)
        levels = np.floor(10 * flat / max(flat.max(), 1e-12))  # what a sparse reply can say: 1-10, else 0
        for xs, pred in ((dense, flat), (sparse, levels)):
            try:
                xs.append(metrics.correlation(t, pred))
            except metrics.Undefined:
                xs.append(None)
    out["offline_proxy"] = _agree(dense, sparse)
    return out


def adaptive_use(rows, scorers) -> dict:
    """Per scorer: windows (units) judged against available under the adaptive budget, and why it stopped."""
    out = {}
    for sc in scorers:
        got = [r["scores"][sc]["details"]["adaptive"] for r in rows
               if "adaptive" in r["scores"].get(sc, {}).get("details", {})]
        if got:
            used, avail = sum(a["units_used"] for a in got), sum(a["units_available"] for a in got)
            out[sc] = {"grades": len(got), "units_used": used, "units_available": avail,
                       "saving": round(1 - used / max(avail, 1), 3),
                       "stopped": {k: sum(a["stopped"] == k for a in got) for k in ("interval", "all units", "cap")}}
    return out


def budget_sample(sample, n: int):
    """The sample with its held-out windows cut to n, stratified and seeded (what --llm-windows n judges)."""
    from autointerp.score import interval as ci
    from autointerp.score.base import activating, budget_cut

    if n >= len(sample.score):
        return sample
    wins = budget_cut(list(sample.score), activating(sample.score), ci.rng_for(sample.seed, sample.feature, "budget"), n)
    return dataclasses.replace(sample, score=tuple(wins))


def window_sweep(store, dictionary, kept, expl, other, scorers, scorer_model, llm, options, budgets, seed) -> dict:
    """Own vs swapped labels, mean interval half-width and cost per feature, at each held-out window budget."""
    out = {}
    for b in budgets:
        cut = [budget_sample(s, b) for s in kept]
        opts = dataclasses.replace(llm, run_id=f"{llm.run_id}-w{b}")
        own = _grade(make_scorers(scorers, store, dictionary, scorer_model, opts, options), cut, expl)
        swap = _grade(make_scorers(scorers, store, dictionary, scorer_model, opts, options), cut,
                      [expl[j] for j in other])
        row = {"windows": b, "mean_windows": round(float(np.mean([len(s.score) for s in cut])), 1)}
        for sc in own:
            halves = [(x.interval[1] - x.interval[0]) / 2 for x in own[sc] if x.interval]
            row[sc] = {**swap_stats([x.value for x in own[sc]], [x.value for x in swap[sc]],
                                    np.random.default_rng(seed + 2)),
                       "mean_half_width": round(float(np.mean(halves)), 4) if halves else None}
        if scorer_model:
            row["cost_per_feature"] = _costs(store, opts.run_id, 2 * len(kept))
        out[str(b)] = row
    return out


def _doc(score) -> dict:
    return {"status": score.status, "value": score.value}


def _costs(store, run_id: str, n: int) -> dict:
    by = store.ledger.call_costs(run_id)
    out = {p: {"calls": round(v["calls"] / n, 2), "input_tokens": round(v["input_tokens"] / n),
               "output_tokens": round(v["output_tokens"] / n), "usd": round(v["cost_usd"] / n, 6)}
           for p, v in by.items()}
    total = sum(v["cost_usd"] for v in by.values()) / n
    return {"by_purpose": out, "usd": round(total, 6), "usd_per_million_features": round(total * 1e6, 2)}


def _print(res: dict) -> None:
    print(f"{res['dictionary']}: {res['features']} features, seed {res['seed']}, explainer {res['explainer']}, "
          f"scorers {', '.join(res['scorers'])}" + (f" on {res['scorer_model']}" if res["scorer_model"] else ""))
    print(f"\n{'labels by':<34}{'scorer':<12}{'ok':>4}{'undef':>6}{'fail':>5}{'mean':>7}   p10 / p50 / p90")
    rows = [(e, sc, d) for e, v in res["labels"].items() for sc, d in v["scores"].items()]
    rows += [("(same labels, offline scorer)", sc, d) for sc, d in res.get("offline_scorers", {}).items()]
    for e, sc, d in rows:
        q = d.get("deciles")
        print(f"{e[:33]:<34}{sc:<12}{d['ok']:>4}{d['undefined']:>6}{d['failed']:>5}"
              + (f"{d['mean']:>7.3f}   {q[0]:.2f} / {q[2]:.2f} / {q[4]:.2f}" if q else f"{'-':>7}"))
    sw = res["label_swap"]
    print(f"\nlabel swap ({sw['identical_texts']} swaps with identical text):")
    for sc, r in sw.items():
        if sc == "identical_texts":
            continue
        if not r["pairs"]:
            print(f"  {sc}: no pair with both scores defined")
            continue
        print(f"  {sc}: own > swapped in {r['own_beats_swapped']:.3f} of {r['pairs']} pairs; mean own "
              f"{r['mean_own']:.3f} vs swapped {r['mean_swapped']:.3f}; 95% CI of the difference "
              f"[{r['mean_difference_95ci'][0]:.3f}, {r['mean_difference_95ci'][1]:.3f}]")
    ag = res.get("simulator_agreement")
    if ag:
        if "llm" in ag:
            a = ag["llm"]
            print(f"\nsimulators on the same labels: {a['this']} vs {a['other']}: Pearson {a.get('pearson', '-')} "
                  f"over {a['pairs']} labels, mean |difference| {a.get('mean_abs_difference', '-')}")
        o = ag["offline_proxy"]
        print(f"offline proxy (offline predictions as they are vs as sparse levels 1-10): Pearson "
              f"{o.get('pearson', '-')} over {o['pairs']} labels, mean |difference| {o.get('mean_abs_difference', '-')}")
    for sc, a in res.get("adaptive", {}).items():
        print(f"\nadaptive budget, {sc}: {a['units_used']:,} of {a['units_available']:,} windows judged "
              f"({a['saving']:.0%} saved) over {a['grades']} grades; stopped by the interval {a['stopped']['interval']}, "
              f"all windows used {a['stopped']['all units']}, cap {a['stopped']['cap']}")
    sweep = res.get("sweep")
    if sweep:
        print("\nwindow budget sweep (own vs swapped labels on the same features; half-width of the own labels' "
              "95% intervals):")
        print(f"  {'windows':>7}  {'scorer':<11}{'own>swap':>9}{'own':>8}{'swap':>8}{'half-width':>12}{'$/feature':>11}")
        for b, row in sweep.items():
            usd = row.get("cost_per_feature", {}).get("usd")
            for sc, r in row.items():
                if not isinstance(r, dict) or sc == "cost_per_feature" or not r.get("pairs"):
                    continue
                hw = "-" if r["mean_half_width"] is None else f"{r['mean_half_width']:.3f}"
                print(f"  {b:>7}  {sc:<11}{r['own_beats_swapped']:>9.3f}{r['mean_own']:>8.3f}{r['mean_swapped']:>8.3f}"
                      f"{hw:>12}{'' if usd is None else f'{usd:.6f}':>11}")
    c = res.get("cost_per_feature")
    if c:
        print("\ncost per feature (at the price first paid):")
        for p, v in c["by_purpose"].items():
            print(f"  {p:<10} {v['calls']:>5} calls {v['input_tokens']:>7,} in {v['output_tokens']:>6,} out  "
                  f"${v['usd']:.5f}")
        print(f"  total ${c['usd']:.5f} a feature, ${c['usd_per_million_features']:,.0f} per million features")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--dictionary")
    ap.add_argument("--features", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--explainer", default="offline")
    ap.add_argument("--scorers", default="simulation")
    ap.add_argument("--scorer-model")
    ap.add_argument("--base-url")
    ap.add_argument("--api-key-env")
    ap.add_argument("--prompt", default="explain_highlight")
    ap.add_argument("--rpm", type=float, default=None, help="default: 50, raised to what the provider advertises")
    ap.add_argument("--loopback", action="store_true", help="both models: the scripted loopback model (offline)")
    ap.add_argument("--sweep", default="", help="held-out window budgets to compare, e.g. 10,20,40,100")
    ap.add_argument("--simulator", default="simulate_json", help="the LLM simulator's prompt (simulate_sparse)")
    ap.add_argument("--adaptive", type=float, help="adaptive window budget: the interval half-width to stop at")
    ap.add_argument("--llm-windows", type=int, help="LLM scorers judge at most this many held-out windows")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    server = None
    if a.loopback:
        sys.path.insert(0, str(ROOT / "tests"))
        from loopback import Loopback, scripted

        server = Loopback(reply=scripted, keep_requests=False).__enter__()
        os.environ.setdefault("AUTOINTERP_LOOPBACK_KEY", "loopback")
        a.explainer, a.scorer_model = LOOPBACK_MODEL, LOOPBACK_MODEL
        a.base_url, a.api_key_env, a.rpm = server.url, "AUTOINTERP_LOOPBACK_KEY", 60_000
    llm = LLMOptions(base_url=a.base_url, api_key_env=a.api_key_env, prompt=a.prompt, requests_per_minute=a.rpm)
    try:
        with open_store(a.store) as s:
            res = quality(s, s.dictionary(a.dictionary), n=a.features, seed=a.seed, explainer=a.explainer,
                          scorers=parse_scorers(a.scorers), scorer_model=a.scorer_model, llm=llm,
                          sweep=[int(x) for x in a.sweep.split(",") if x.strip()],
                          options=ScoringOptions(simulator=a.simulator, windows=a.llm_windows,
                                                 adaptive=AdaptiveBudget(a.adaptive) if a.adaptive else None))
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    if a.json:
        json.dump(res, sys.stdout)
        print()
    else:
        _print(res)
    return res


if __name__ == "__main__":
    main()
