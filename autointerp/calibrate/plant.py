"""Plant gold features on a corpus: every rule's activations on every stored context, as a gold dictionary.

Feature i of the gold dictionary is rule i. A rule fires where its pattern does (patterns.py), with a
value of its strength times a seeded jitter in [0.8, 1] (so a feature's windows have quantiles, as a real
feature's do). The contexts are read a block at a time and every block's rows are appended to the
dictionary as they are made, in one transaction: planting stops with nothing written when a rule of the
user's fires nowhere (a regex that never matches included) or on more than `MAX_DENSITY` of the tokens.
A built-in rule that fires on too few tokens of this corpus, or on too many, is kept but left out of the
calibration, with the reason.

The gold dictionary is named `gold/<corpus>`, has kind "gold", and keeps its rules in its config: it is
never listed, exported or searched as a real dictionary unless asked for by name. Planting the same
rules on the same corpus again reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import CalibrationError
from ..patterns import Words
from ..progress import Progress
from ..records import Dictionary
from ..store import Store
from .rules import Rule, rules_hash

GOLD = "gold"  # the kind of a gold dictionary
MAX_DENSITY = 0.5  # a rule firing on more of the corpus's tokens than this is not a feature
MIN_FIRING = 20  # a built-in rule needs this many firing tokens to be calibrated on
BLOCK = 512  # contexts read and planted at a time


@dataclass
class Planted:
    """The gold dictionary, its rules (feature i is rules[i]), firing tokens per rule, and the rules left
    out of calibration on this corpus (name -> why)."""

    dictionary: Dictionary
    rules: list[Rule]
    firing: dict[str, int]
    left_out: dict[str, str] = field(default_factory=dict)
    created: bool = True

    @property
    def usable(self) -> list[int]:
        """Feature ids of the rules calibration uses."""
        return [i for i, r in enumerate(self.rules) if r.name not in self.left_out]


def gold_name(store: Store, corpus_id: int) -> str:
    corpus = store.corpus(corpus_id)
    name = f"{GOLD}/{corpus.name}"
    for d in store.activations.dictionaries(gold=True):
        if d.name == name and d.corpus_id != corpus_id:
            return f"{name}-{corpus_id}"
    return name


def plant(store: Store, dictionary: Dictionary, rules: list[Rule], *, seed: int = 0,
          progress: bool = False) -> Planted:
    """The gold dictionary of `rules` over `dictionary`'s corpus: reused when planted already from the same
    rules, else planted (replacing an older one of other rules)."""
    name, h = gold_name(store, dictionary.corpus_id), rules_hash(rules)
    for d in store.activations.dictionaries(gold=True):
        if d.name == name and d.config.get("rules_hash") == h and d.config.get("seed") == seed:
            return Planted(d, rules, dict(d.config["firing"]), dict(d.config["left_out"]), created=False)
    corpus = store.corpus(dictionary.corpus_id)
    n_tokens = int(store.activations.context_lengths(corpus.corpus_id).sum())
    bar = Progress(corpus.n_contexts, "planting gold features", "contexts", enabled=progress)
    firing = np.zeros(len(rules), np.int64)
    with store.transaction() as w:
        b = w.activations.add_dictionary(name=name, corpus_id=corpus.corpus_id, model=GOLD, hook="rules",
                                         width=len(rules), kind=GOLD, source="autointerp calibrate",
                                         config={}, replace=True, sorted_input=False)
        for lo in range(0, corpus.n_contexts, BLOCK):
            ids = np.arange(lo, min(lo + BLOCK, corpus.n_contexts))
            f, c, p, v = _plant_block(store, corpus.corpus_id, ids, rules, seed)
            firing += np.bincount(f, minlength=len(rules))
            b.append(f, c, p, v)
            bar.update(len(ids))
        bar.close()
        counts = {r.name: int(n) for r, n in zip(rules, firing)}
        left_out = _check(rules, counts, n_tokens)
        b.finish()
        config = {"gold": True, "rules_hash": h, "seed": seed, "planted_from": dictionary.name,
                  "rules": [r.to_dict() for r in rules], "firing": counts, "left_out": left_out}
        w.activations.set_dictionary_config(b.dictionary_id, config)
    return Planted(store.dictionary(name), rules, counts, left_out)


def _plant_block(store: Store, corpus_id: int, ids: np.ndarray, rules: list[Rule], seed: int):
    """(feature, context, position, value) rows of every rule on the contexts `ids`."""
    ctx = store.activations.read_contexts(corpus_id, ids, with_strings=True)
    off, toks = ctx["offsets"], ctx["tokens"]
    rng = np.random.default_rng([seed, int(ids[0])])
    fs, cs, ps, vs = [], [], [], []
    for k, cid in enumerate(ctx["context_id"].tolist()):
        words = Words.of(toks[off[k]:off[k + 1]])
        for i, r in enumerate(rules):
            act = r.pattern.evaluate(words)
            at = np.flatnonzero(act)
            if len(at):
                fs.append(np.full(len(at), i, np.int64))
                cs.append(np.full(len(at), cid, np.int64))
                ps.append(at)
                vs.append(act[at])
    if not fs:
        return (np.zeros(0, np.int64),) * 3 + (np.zeros(0, np.float32),)
    v = np.concatenate(vs)
    v = (v * rng.uniform(0.8, 1.0, len(v))).astype(np.float32)
    return np.concatenate(fs), np.concatenate(cs), np.concatenate(ps), v


def _check(rules: list[Rule], counts: dict[str, int], n_tokens: int) -> dict[str, str]:
    """Rules left out of calibration (name -> why); a rule of the user's that fires nowhere or everywhere is
    an error (the transaction is rolled back: nothing written)."""
    out = {}
    for r in rules:
        n = counts[r.name]
        share = n / max(n_tokens, 1)
        why = ""
        if n == 0:
            why = ("its regex never matches the corpus" if r.kind == "regex" else "it fires nowhere in the corpus")
        elif share > MAX_DENSITY:
            why = f"it fires on {share:.0%} of the corpus's tokens (at most {MAX_DENSITY:.0%})"
        if why and r.source != "built-in":
            raise CalibrationError(f"rule {r.name!r} ({r.source}): {why}; nothing was written")
        if not why and n < MIN_FIRING:
            why = f"it fires on {n} tokens of this corpus (calibration needs {MIN_FIRING})"
        if why:
            out[r.name] = why
    return out
