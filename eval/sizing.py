"""Sizing: tokens and dollars per feature, and per million features, for each scorer choice and window budget.

    python eval/sizing.py --store S [--features 100] [--windows 10,20,40,100] \\
        [--rpm 4000 --itpm 2000000 --otpm 400000] [--total 1000000] [--json]

For `--features` sampled features of a store it renders the real prompts: the explainer's (its 40
explain windows), and each LLM scorer's on the feature's held-out windows, cut to each budget of
`--windows` exactly as `label --llm-windows N` cuts them (stratified, seeded: half activating, half
non-firing). Input tokens are counted at ~4 characters a token (what bench_llm.py measured; a real
tokenizer differs by some 10-20%). Output tokens are counted on the reply a perfect model would write
in each format (a JSON-ish count: every number, word and punctuation mark one token): detection and
fuzzing list the ids of the windows that fire; the dense simulator writes a number for every token;
the sparse one lists the tokens it predicts non-zero; intruder names one window per question (its 12
questions do not depend on the budget); an explanation is ~60 tokens.

Then it prints, per scorer choice and budget, tokens and dollars per 1M features at list and batch
prices (gpt-4o-mini, claude-haiku; every model in --json), features an hour at the rate limits given,
and what prompt caching would save: the shared prefix (system prompt and few-shot turns) is below every
provider's minimum cacheable length, so caching saves nothing as the prompts are, and padding the prefix
up to the minimum would cost more than the cache read saves (the table says so).
"""

from __future__ import annotations

import argparse
import json
import re
import sys

import numpy as np

from autointerp.explain.prompts import load_template, render_questions, render_scoring, show_token
from autointerp.llm.prices import DEFAULT_PRICES
from autointerp.score import interval as ci
from autointerp.score.base import NEGATIVE_KINDS, ScoringOptions, activating, budget_cut
from autointerp.score.intruder import questions
from autointerp.score.llm import fuzzed

from quality import pick_samples

CHARS_PER_TOKEN = 4.0
MIN_CACHEABLE = 1024  # the smallest minimum prefix among current models (OpenAI; Claude Haiku needs 2,048)
PER_CALL = ScoringOptions.windows_per_call  # windows a scorer call shows (label's default)
EXPLAIN_OUT = 60
SHOWN_MODELS = ("gpt-4o-mini", "claude-haiku")
SCORERS = ("detection", "fuzzing", "simulation", "simulation_sparse", "intruder")
COMBOS = {"explain": ("explain",), "explain + detection": ("explain", "detection"),
          "explain + detection + simulation (dense)": ("explain", "detection", "simulation"),
          "explain + detection + simulation (sparse)": ("explain", "detection", "simulation_sparse"),
          "explain + fuzzing": ("explain", "fuzzing"), "explain + intruder": ("explain", "intruder")}
TEMPLATES = {"detection": "detect_json", "fuzzing": "fuzz_json", "simulation": "simulate_json",
             "simulation_sparse": "simulate_sparse", "intruder": "intruder_json"}


def _in(text: str) -> float:
    return len(text) / CHARS_PER_TOKEN


def _out(text: str) -> int:
    """Output tokens of a JSON reply, counted as BPE roughly splits JSON: each number, word, punctuation."""
    return len(re.findall(r"\d+|[^\W\d_]+|[^\s\w]", text))


def _levels(w, peak: float) -> list[int]:
    return [0 if peak <= 0 else min(10, int(10 * max(a, 0.0) / peak)) for a in w.activations]


def _ideal(name: str, group: list, peak: float) -> str:
    """The reply a perfect model would write for one call."""
    if name == "detection":
        return json.dumps({"fires": [i for i, u in enumerate(group, 1) if u.kind not in NEGATIVE_KINDS]})
    if name == "fuzzing":
        return json.dumps({"correct": [i for i, u in enumerate(group, 1) if u.truth]})
    if name == "simulation":
        return json.dumps({"windows": [{"id": i, "activations": _levels(w, peak)} for i, w in enumerate(group, 1)]})
    if name == "simulation_sparse":
        return json.dumps({"nonzero": [[i, j, show_token(t), v] for i, w in enumerate(group, 1)
                                       for j, (t, v) in enumerate(zip(w.tokens, _levels(w, peak))) if v >= 1]})
    return json.dumps({"answers": [{"id": i, "intruder": q.intruder + 1} for i, q in enumerate(group, 1)]})


def _budgeted(sample, units, strata, name: str, budget: int | None) -> list:
    """`units` cut to `budget` as the scorer cuts them (stratified, seeded), or all of them."""
    if budget is None or budget >= len(units):
        return list(units)
    return budget_cut(list(units), strata, ci.rng_for(sample.seed, sample.feature, name), budget)


def measure(store, dictionary, n: int, seed: int, budgets: list[int | None]) -> dict:
    """Per feature: {"explain": row, scorer: {budget: row}} with row = calls, input, output, prefix tokens."""
    from autointerp.explain import Background
    from autointerp.explain.offline import OfflineExplainer

    samples = pick_samples(store, dictionary, n, seed)
    explain = load_template("explain_highlight")
    offline = OfflineExplainer(Background.from_store(store.activations, dictionary.corpus_id))
    prefix = _in(explain.system + "".join(t for _, t in explain.fewshot_turns))
    per: dict = {"explain": {"calls": 0.0, "input": 0.0, "output": 0.0, "prefix": prefix}}
    templates = {k: load_template(v) for k, v in TEMPLATES.items()}
    for name in SCORERS:
        per[name] = {b: {"calls": 0.0, "input": 0.0, "output": 0.0, "windows": 0.0,
                         "prefix": _in(templates[name].system)} for b in budgets}
    for s in samples:
        msgs = explain.messages(list(s.explain)[:40])
        per["explain"]["calls"] += 1
        per["explain"]["input"] += _in(explain.system + "".join(t for _, t in msgs))
        per["explain"]["output"] += EXPLAIN_OUT
        label = offline.explain(s).text  # an explanation of typical length, to put in the scorer prompts
        peak = max((max(w.activations) for w in s.score), default=0.0)
        for name in SCORERS:
            t = templates[name]
            for b in budgets:
                row = per[name][b]
                if name == "intruder":  # its questions do not depend on the budget
                    qs = questions(s, ScoringOptions.intruder_k)
                    step = max(1, 2 * PER_CALL // (ScoringOptions.intruder_k + 1))
                    for i in range(0, len(qs), step):
                        g = qs[i:i + step]
                        row["calls"] += 1
                        row["input"] += _in(t.system + render_questions(t, [list(q.windows) for q in g]))
                        row["output"] += _out(_ideal(name, g, peak))
                    row["windows"] += sum(len(q.windows) for q in qs)
                    continue
                if name == "fuzzing":
                    units = fuzzed(s)
                    units = _budgeted(s, units, np.array([u.truth for u in units]), name, b)
                    wins = [u.window for u in units]
                else:
                    wins = _budgeted(s, s.score, activating(s.score), name, b)
                    units = wins
                for i in range(0, len(wins), PER_CALL):
                    g, gu = wins[i:i + PER_CALL], units[i:i + PER_CALL]
                    marks = [list(u.marks) for u in gu] if name == "fuzzing" else None
                    row["calls"] += 1
                    row["input"] += _in(t.system + render_scoring(t, label, g, marks))
                    row["output"] += _out(_ideal(name, gu, peak))
                row["windows"] += len(wins)
    k = len(samples)
    out = {"explain": {m: v / k if m != "prefix" else v for m, v in per["explain"].items()}}
    for name in SCORERS:
        out[name] = {b: {m: v / k if m != "prefix" else v for m, v in row.items()} for b, row in per[name].items()}
    return out


def _dollars(tin: float, tout: float, total: int, model: str) -> dict:
    p_in, p_out, _, _ = DEFAULT_PRICES[model]
    direct = (tin * p_in + tout * p_out) * total / 1e6
    return {"list": round(direct), "batch": round(direct / 2)}


def combos(per: dict, budgets: list, total: int, rpm: float, itpm: float, otpm: float) -> list[dict]:
    """Every scorer choice at every budget: tokens, calls, dollars per `total` features, features an hour."""
    rows = []
    for name, parts in COMBOS.items():
        for b in (budgets if len(parts) > 1 else [None]):
            got = [per["explain"] if p == "explain" else per[p][b] for p in parts]
            calls, tin, tout = (sum(r[m] for r in got) for m in ("calls", "input", "output"))
            limits = {"requests": rpm / calls, "input tokens": itpm / tin, "output tokens": otpm / tout}
            binding = min(limits, key=limits.get)
            rows.append({"scorers": name, "windows": b, "calls": round(calls, 2), "input_tokens": round(tin),
                         "output_tokens": round(tout), "features_per_hour": round(limits[binding] * 60),
                         "binding_limit": binding,
                         "usd": {m: _dollars(tin, tout, total, m) for m in DEFAULT_PRICES}})
    return rows


def caching(per: dict) -> list[dict]:
    """Each prompt's shared prefix against the smallest minimum cacheable length, and what padding the
    prefix up to it would cost or save per call at gpt-4o-mini prices (cache reads at half price)."""
    p_in, _, p_read, _ = DEFAULT_PRICES["gpt-4o-mini"]
    out = []
    for name in ("explain", *SCORERS):
        prefix = per["explain"]["prefix"] if name == "explain" else next(iter(per[name].values()))["prefix"]
        now, padded = prefix * p_in, MIN_CACHEABLE * p_read
        out.append({"prompt": name, "prefix_tokens": round(prefix), "min_cacheable": MIN_CACHEABLE,
                    "cached_now": prefix >= MIN_CACHEABLE,
                    "padding_saves_per_million_calls_usd": round(now - padded, 2)})
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--dictionary")
    ap.add_argument("--features", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--windows", default="10,20,40,100", help="held-out window budgets (all: every held-out window)")
    ap.add_argument("--rpm", type=float, default=4000)
    ap.add_argument("--itpm", type=float, default=2_000_000)
    ap.add_argument("--otpm", type=float, default=400_000)
    ap.add_argument("--total", type=int, default=1_000_000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    from autointerp.store import open_store

    budgets = [None if x.strip() == "all" else int(x) for x in a.windows.split(",") if x.strip()]
    with open_store(a.store, read_only=True) as s:
        d = s.dictionary(a.dictionary)
        per = measure(s, d, a.features, a.seed, budgets)
    out = {"store": a.store, "features_measured": a.features, "total": a.total,
           "limits": {"rpm": a.rpm, "itpm": a.itpm, "otpm": a.otpm},
           "per_feature": {k: v if k == "explain" else {str(b): r for b, r in v.items()} for k, v in per.items()},
           "combos": combos(per, budgets, a.total, a.rpm, a.itpm, a.otpm), "caching": caching(per)}
    if a.json:
        json.dump(out, sys.stdout)
        print()
        return out
    print(f"per feature ({a.features} measured; input at {CHARS_PER_TOKEN:g} characters a token, output counted "
          "on a perfect reply):")
    e = per["explain"]
    print(f"  {'explain':<19}{'':>8}{e['calls']:>6.1f} calls {e['input']:>8,.0f} in {e['output']:>7,.0f} out")
    for name in SCORERS:
        for b, r in per[name].items():
            print(f"  {name:<19}{'all' if b is None else b:>8}{r['calls']:>6.1f} calls {r['input']:>8,.0f} in "
                  f"{r['output']:>7,.0f} out  ({r['windows']:.0f} windows)")
    dense = {b: per["simulation"][b]["output"] for b in budgets}
    sparse = {b: per["simulation_sparse"][b]["output"] for b in budgets}
    print("  sparse simulator output vs dense: " + ", ".join(
        f"{'all' if b is None else b} windows {dense[b] / max(sparse[b], 1e-9):.1f}x fewer" for b in budgets))
    print(f"\n{a.total:,} features, $ (list / batch)" + "".join(f"{m:>22}" for m in SHOWN_MODELS)
          + f"{'features/h':>12}  binds")
    for r in out["combos"]:
        w = "" if r["windows"] is None and r["scorers"] == "explain" else \
            f", {'all' if r['windows'] is None else r['windows']} windows"
        cells = "".join(f"{r['usd'][m]['list']:>12,} / {r['usd'][m]['batch']:>7,}" for m in SHOWN_MODELS)
        print(f"  {(r['scorers'] + w)[:56]:<56}{cells}{r['features_per_hour']:>12,}  {r['binding_limit']}")
    print(f"\nprompt caching: minimum cacheable prefix {MIN_CACHEABLE:,} tokens (OpenAI; Claude Haiku 2,048)")
    for c in out["caching"]:
        verdict = "cached" if c["cached_now"] else (
            f"not reachable: padding it to {MIN_CACHEABLE:,} would "
            + ("save" if c["padding_saves_per_million_calls_usd"] > 0 else "cost")
            + f" ${abs(c['padding_saves_per_million_calls_usd']):,.2f} per 1M calls at gpt-4o-mini")
        print(f"  {c['prompt']:<19}prefix {c['prefix_tokens']:>5,} tokens: {verdict}")
    return out


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
