"""What a calibration's grades say: per scorer, rule category and window budget, how well the truth is told
from near misses and unrelated labels; per explainer, how far its labels' grades fall from the truth's.

A rate's 95% interval is a bootstrap over rules (a rule's seeds move together, so rules are resampled, not
grades). Definitions, for one scorer and budget:

- truth first: the truth's grade is defined and above every other candidate's defined grade (ties lose);
- above near misses / above unrelated: the share of (truth, other) pairs the truth wins (ties count half);
- near-miss AUROC: truth grades against near-miss grades, pooled over rules and seeds, so a grade's level
  must mean the same on every feature (0.5 is chance);
- coverage: how often one seed's 95% interval of the truth holds the mean of the other seeds' grades
  (needs two seeds or more; near 0.95 when the intervals are as wide as the seed-to-seed spread).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from .rules import CATEGORIES, NEAR_MISSES, Rule

N_BOOT = 2000


def _boot(per_rule: dict[str, list], stat, seed: int = 0) -> list[float] | None:
    """95% interval of stat(values) with rules resampled."""
    keys = [k for k, v in per_rule.items() if v]
    if len(keys) < 2:
        return None
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(N_BOOT):
        pick = rng.integers(0, len(keys), len(keys))
        got = stat([x for i in pick for x in per_rule[keys[i]]])
        if got is not None:
            vals.append(got)
    return [round(float(x), 3) for x in np.percentile(vals, [2.5, 97.5])] if vals else None


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _auroc(pairs: list[tuple[float, int]]) -> float | None:
    """AUROC of (score, is_truth) pairs; ties count half."""
    pos = np.array([s for s, y in pairs if y])
    neg = np.array([s for s, y in pairs if not y])
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def _rate(per_rule: dict[str, list[float]]) -> dict:
    flat = [x for v in per_rule.values() for x in v]
    m = _mean(flat)
    return {"rate": None if m is None else round(m, 3), "ci": _boot(per_rule, _mean), "n": len(flat)}


def _one(grades: list) -> dict:
    """The metrics of one scorer and budget over some rules."""
    by_key: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for g in grades:
        by_key[(g.rule, g.seed)][g.candidate].append(g)
    first: dict[str, list[float]] = defaultdict(list)
    near: dict[str, list[float]] = defaultdict(list)
    unrel: dict[str, list[float]] = defaultdict(list)
    auroc_pairs: dict[str, list[tuple[float, int]]] = defaultdict(list)
    undefined = 0
    for (rule, _), c in by_key.items():
        truth = c.get("truth", [None])[0]
        ok = truth is not None and truth.status == "ok"
        undefined += not ok
        others = [g for k, gs in c.items() if k != "truth" for g in gs if g.status == "ok"]
        first[rule].append(float(ok and all(truth.value > g.value for g in others)))
        if not ok:
            continue
        for kind, bucket in ((NEAR_MISSES, near), (("unrelated",), unrel)):
            for g in (g for k in kind for g in c.get(k, []) if g.status == "ok"):
                bucket[rule].append(1.0 if truth.value > g.value else 0.5 if truth.value == g.value else 0.0)
        auroc_pairs[rule].append((truth.value, 1))
        auroc_pairs[rule] += [(g.value, 0) for k in NEAR_MISSES for g in c.get(k, []) if g.status == "ok"]
    au = _auroc([p for v in auroc_pairs.values() for p in v])
    return {"rules": len(first), "truth_first": _rate(first), "above_near": _rate(near),
            "above_unrelated": _rate(unrel),
            "near_auroc": {"value": None if au is None else round(au, 3),
                           "ci": _boot(auroc_pairs, lambda ps: _auroc(ps))},
            "coverage": _coverage(grades), "truth_undefined": undefined}


def _coverage(grades: list) -> dict:
    """How often a seed's interval of the truth holds the mean of the other seeds' truth grades."""
    by_rule: dict[str, dict[int, tuple]] = defaultdict(dict)
    for g in grades:
        if g.candidate == "truth" and g.status == "ok" and g.low is not None:
            by_rule[g.rule][g.seed] = (g.value, g.low, g.high)
    hits: dict[str, list[float]] = defaultdict(list)
    for rule, seeds in by_rule.items():
        for s, (_, lo, hi) in seeds.items():
            others = [v for t, (v, _, _) in seeds.items() if t != s]
            if others:
                hits[rule].append(float(lo <= np.mean(others) <= hi))
    return _rate(hits) if hits else {"rate": None, "ci": None, "n": 0}


def scorer_summary(grades: list, rules: list[Rule], budgets: Iterable[int | None]) -> list[dict]:
    """One row per (scorer, budget, category), "all" categories first."""
    out = []
    scorers = list(dict.fromkeys(g.scorer for g in grades))
    for scorer in scorers:
        for budget in budgets:
            mine = [g for g in grades if g.scorer == scorer and g.budget == budget]
            for cat in ("all", *CATEGORIES):
                part = mine if cat == "all" else [g for g in mine if g.category == cat]
                if part:
                    out.append({"scorer": scorer, "budget": budget or "all", "category": cat, **_one(part)})
    return out


def word_mentions(text: str, words: Iterable[str]) -> bool:
    """Whether a label names any of `words` (as a whole word, quoted or not)."""
    low = text.lower()
    return any(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", low) for w in words)


def explainer_summary(own: list, grades: list, rules: list[Rule], name: str, k: int, budget: int | None) -> dict:
    """The explainer's labels against the truth, per scorer: mean gap (label minus truth, on the same
    windows: seed 0, `budget`), how many are within 0.1 of the truth, and (word classes) how many name a word
    of the rule."""
    truth = {(g.rule, g.scorer): g for g in grades if g.candidate == "truth" and g.seed == 0 and g.budget == budget}
    by_rule = {r.name: r for r in rules}
    per_scorer = {}
    for scorer in dict.fromkeys(g.scorer for g in own):
        gaps: dict[str, list[float]] = {}
        for g in own:
            t = truth.get((g.rule, scorer))
            if g.scorer == scorer and g.status == "ok" and t is not None and t.status == "ok":
                gaps[g.rule] = [g.value - t.value]
        flat = [v[0] for v in gaps.values()]
        per_scorer[scorer] = {"labels": len(flat), "gap": None if not flat else round(float(np.mean(flat)), 3),
                              "gap_ci": _boot(gaps, _mean),
                              "within_0.1": None if not flat else round(float(np.mean(np.abs(flat) <= 0.1)), 3),
                              "by_category": {c: round(float(np.mean([v[0] for r, v in gaps.items()
                                                                     if by_rule[r].category == c])), 3)
                                              for c in CATEGORIES if any(by_rule[r].category == c for r in gaps)}}
    labels = {g.rule: g.text for g in own}
    words = [(r, labels[r.name]) for r in rules if r.name in labels and r.kind == "words"]
    named = [word_mentions(text, sorted(r.pattern.words)) for r, text in words]
    return {"explainer": name, "candidates": k, "budget": budget or "all", "labelled": len(labels), "scorers": per_scorer,
            "names_words": {"rate": round(float(np.mean(named)), 3) if named else None, "n": len(named)},
            "labels": labels}


def _mean_defined(vals: list) -> float | None:
    ok = [v for v in vals if v is not None]
    return None if not ok else round(float(np.mean(ok)), 3)


def by_rule(grades: list[dict]) -> list[dict]:
    """Per rule and scorer, at the run's widest window budget (every held-out window where it has that), seeds
    averaged: the truth's grade,
    the best-graded near miss and unrelated label, how often the truth came first, and each explainer's
    label with its grade. `grades`: a run's stored grade rows (CalibrationRepo.grades)."""
    cell: dict[tuple[str, str], dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    category: dict[str, str] = {}
    budgets = {g["budget"] for g in grades}
    widest = None if None in budgets or not budgets else max(budgets)
    for g in grades:
        if g["budget"] != widest:
            continue
        category[g["rule"]] = g["category"]
        c = cell[(g["rule"], g["scorer"])][g["candidate"]]
        c[g["text"]].append(g["value"] if g["status"] == "ok" else None)
    out = []
    for (rule, scorer), cands in sorted(cell.items()):
        row: dict = {"rule": rule, "category": category[rule], "scorer": scorer}
        (truth_text, truth_vals), = cands["truth"].items() if "truth" in cands else ((("", [None]),))
        row["truth"] = {"text": truth_text, "value": _mean_defined(truth_vals)}
        for group, kinds in (("near_miss", NEAR_MISSES), ("unrelated", ("unrelated",))):
            means = [(k, t, m) for k in kinds for t, v in cands.get(k, {}).items()
                     if (m := _mean_defined(v)) is not None]
            best = max(means, key=lambda x: x[2], default=None)
            row[group] = None if best is None else {"kind": best[0], "text": best[1], "value": best[2]}
        row["explainers"] = {k: {"text": t, "value": _mean_defined(v)} for k, texts in cands.items()
                             if k not in ("truth", *NEAR_MISSES, "unrelated") for t, v in texts.items()}
        out.append(row)
    return out
