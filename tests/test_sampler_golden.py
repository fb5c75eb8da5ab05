"""Golden files for the sampler: every window of every feature, under several configs, as drawn today.

Any change to which windows the sampler picks (or in what order, kind, set or dtype it hands them to
the store) fails here. Two goldens:
- sampler_store.json: a synthetic delphi cache ingested into a store, `Sampler.sample_all` under three
  configs (defaults; short windows with a peak offset, neighbour negatives and few bins; large budgets
  that leave most features scarce and some too rare), read back from the store's tables.
- sampler_select.json: `select_chunk` called directly on hand-made arrays that the delphi cache cannot
  produce: contexts of different lengths (some shorter than the window), copied contexts (content
  de-duplication), tied values, unsorted rows, rows of features outside the chunk, non-contiguous and
  contiguous chunks, a chunk where nothing fires, a one-feature chunk.

After an intended change of the sampler's output, rewrite them with
    AUTOINTERP_UPDATE_GOLDEN=1 python -m pytest -q tests/test_sampler_golden.py
and review the diff (one line per feature).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from autointerp.ingest import ingest_delphi
from autointerp.records import SamplerConfig
from autointerp.sample import Sampler, select_chunk
from autointerp.sample.sampler import take_contexts
from autointerp.sample.windows import SAMPLE_SETS, WINDOW_KINDS, SampleSet, WindowKind

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("AUTOINTERP_UPDATE_GOLDEN") == "1"
SET_CODE = {"explain": "E", "score": "S"}
KIND_CODE = {"top": "T", "quantile": "Q", "random": "R", "neighbor": "N"}
LEGEND = ("window: '<set><kind> rank context start length'; set E explain, S score; "
          "kind T top, Q quantile, R random, N neighbor")


def _feature_line(feature, status, reason, n_candidates, windows) -> dict:
    return {"feature": int(feature), "status": str(status), "reason": str(reason), "n_candidates": int(n_candidates),
            "windows": [f"{SET_CODE[s]}{KIND_CODE[k]} {int(r)} {int(c)} {int(st)} {int(ln)}"
                        for s, k, r, c, st, ln in windows]}


def _dump(header: dict, runs: dict[str, tuple[dict, list[dict]]]) -> str:
    """Canonical text: a header, then per run its parameters and one line per feature."""
    out = ["{", f'"legend": {json.dumps(LEGEND)},', f'"header": {json.dumps(header, sort_keys=True)},', '"runs": {']
    for i, (name, (params, lines)) in enumerate(runs.items()):
        out.append(f"{json.dumps(name)}: {{\"params\": {json.dumps(params, sort_keys=True)}, \"features\": [")
        out.append(",\n".join(json.dumps(line, sort_keys=True) for line in lines))
        out.append("]}" + ("," if i < len(runs) - 1 else ""))
    out.append("}}")
    return "\n".join(out) + "\n"


def _check(text: str, name: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    want = path.read_text(encoding="utf-8")
    if text != want:
        got_lines, want_lines = text.splitlines(), want.splitlines()
        first = next((i for i, (a, b) in enumerate(zip(got_lines, want_lines)) if a != b),
                     min(len(got_lines), len(want_lines)))
        got_at = got_lines[first] if first < len(got_lines) else "<end>"
        want_at = want_lines[first] if first < len(want_lines) else "<end>"
        pytest.fail(f"sampler output differs from {path} at line {first + 1}:\n"
                    f"  golden: {want_at[:400]}\n  now:    {got_at[:400]}")


# -- through the store ------------------------------------------------------------------------------

STORE_CONFIGS = {
    "defaults": (SamplerConfig(), 3),
    "short_offset_neighbors": (SamplerConfig(window=16, peak_offset=2, n_top=10, n_quantile_explain=10,
                                             n_score_activating=20, n_score_nonfiring=20, n_neighbor_negatives=5,
                                             n_quantiles=4), 11),
    "scarce_and_rare": (SamplerConfig(window=12, peak_offset=11, n_top=40, n_quantile_explain=40,
                                      n_score_activating=80, n_score_nonfiring=4, n_quantiles=7, min_windows=46), 5),
}
STORE_SPEC = {"n_seq": 150, "ctx_len": 64, "width": 64, "l0": 2, "n_splits": 4, "n_token_features": 4,
              "vocab": (2000, 2200), "dead": (50, 51)}


def _add_neighbors(store, d) -> None:
    """Eight stored neighbours per feature, the dead ones and token detectors among them."""
    f = np.repeat(np.arange(d.width), 8)
    k = np.tile(np.arange(1, 9), d.width)
    nb = (f * 7 + k * k * 5) % d.width
    nb = np.where(nb == f, (nb + 1) % d.width, nb)
    sim = (1.0 - k / 10.0).astype(np.float32)
    with store.transaction() as w:
        w.activations.add_neighbors(d.dictionary_id, f, nb, sim)


def test_sample_all_matches_golden(store, delphi_cache):
    folder, _ = delphi_cache(**STORE_SPEC)
    ingest_delphi(store, folder)
    d = store.dictionary()
    _add_neighbors(store, d)
    runs = {}
    for name, (cfg, seed) in STORE_CONFIGS.items():
        Sampler(store, d, cfg, seed=seed, max_rows=4000).sample_all(workers=2)  # several chunks
        st = store.query("SELECT feature, status, reason, n_candidates FROM sample_status WHERE dictionary_id = ? "
                         "ORDER BY feature", [d.dictionary_id]).fetchall()
        refs = store.query("SELECT feature, sample_set, kind, rank, context_id, start, length FROM samples "
                           "WHERE dictionary_id = ? ORDER BY feature, sample_set, rank", [d.dictionary_id]).fetchall()
        by_feature: dict[int, list] = {}
        for r in refs:
            by_feature.setdefault(r[0], []).append(r[1:])
        assert len(st) == d.width
        lines = [_feature_line(f, s, reason, n, by_feature.get(f, [])) for f, s, reason, n in st]
        runs[name] = ({"config": cfg.to_dict(), "seed": seed}, lines)
    _check(_dump({"store": {k: list(v) if isinstance(v, tuple) else v for k, v in STORE_SPEC.items()}}, runs),
           "sampler_store.json")


# -- select_chunk on hand-made arrays ----------------------------------------------------------------

def _corpus(rng) -> tuple[np.ndarray, dict]:
    """300 contexts of 5..89 tokens; contexts 0..59 are copies of three templates (same length and tokens)."""
    n_ctx = 300
    lengths = rng.integers(5, 90, n_ctx)
    src = np.arange(n_ctx)
    src[:60] = np.arange(60) % 3
    lengths = lengths[src]
    own = [rng.integers(0, 40, int(n)) for n in lengths]
    toks = [own[s] for s in src]
    offsets = np.zeros(n_ctx + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    corpus = {"context_id": np.arange(n_ctx, dtype=np.uint32), "offsets": offsets,
              "token_ids": np.concatenate(toks).astype(np.int32)}
    return lengths.astype(np.int64), corpus


def _rows(rng, lengths: np.ndarray, features: np.ndarray) -> dict:
    """Rows of `features`, each with its own firing rate (dead, rare, sparse, dense) and value style."""
    ctx_of = np.repeat(np.arange(len(lengths)), lengths)
    pos_of = np.arange(len(ctx_of)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    rates = (0.0, 0.0004, 0.002, 0.01, 0.04, 0.3)
    parts = []
    for i, f in enumerate(features):
        rate = rates[i % len(rates)]
        hit = np.flatnonzero(rng.random(len(ctx_of)) < rate)
        if i % 4 == 1:  # fires at token 2 of every copied context: the same text many times over
            hit = np.union1d(hit, np.flatnonzero((ctx_of < 60) & (pos_of == 2)))
        if i % 2:
            vals = rng.integers(1, 6, len(hit)) * 0.25  # many ties
        else:
            vals = rng.random(len(hit)) * 10 + 0.01
        parts.append((np.full(len(hit), f), ctx_of[hit], pos_of[hit], vals))
    f, c, p, v = (np.concatenate(x) for x in zip(*parts))
    return {"feature": f.astype(np.uint32), "context_id": c.astype(np.uint32), "position": p.astype(np.uint16),
            "value": v.astype(np.float32)}


def _neighbor_peaks(rng, lengths: np.ndarray, features: np.ndarray, rows: dict, per_feature: int) -> dict:
    """Per feature (grouped, ascending), some peaks on its own firing cells, some elsewhere, some repeated."""
    fs, cs, ps = [], [], []
    for f in features:
        mine = np.flatnonzero(rows["feature"] == f)
        for j in range(per_feature):
            if j % 3 == 0 and len(mine):
                r = mine[rng.integers(len(mine))]
                c, p = int(rows["context_id"][r]), int(rows["position"][r])
            elif j % 5 == 4 and cs and fs[-1] == f:
                c, p = cs[-1], ps[-1]
            else:
                c = int(rng.integers(len(lengths)))
                p = int(rng.integers(lengths[c]))
            fs.append(int(f))
            cs.append(c)
            ps.append(p)
    return {k: np.asarray(x, dtype=np.int64) for k, x in (("feature", fs), ("context", cs), ("position", ps))}


SELECT_CONFIGS = {
    "w8": SamplerConfig(window=8, n_top=3, n_quantile_explain=4, n_score_activating=6, n_score_nonfiring=5,
                        n_neighbor_negatives=3, n_quantiles=3, min_windows=4),
    "w32_offset0_one_bin": SamplerConfig(window=32, peak_offset=0, n_top=5, n_quantile_explain=5,
                                         n_score_activating=10, n_score_nonfiring=8, n_neighbor_negatives=2,
                                         n_quantiles=1, min_windows=3),
    "w6_scarce": SamplerConfig(window=6, peak_offset=5, n_top=40, n_quantile_explain=40, n_score_activating=80,
                               n_score_nonfiring=30, n_quantiles=10, min_windows=2),
}


def test_select_chunk_matches_golden():
    rng = np.random.default_rng(20240607)
    lengths, corpus = _corpus(rng)
    pool = np.sort(rng.choice(200, 60, replace=False))
    chunks = {  # name: (chunk features, features whose rows are also passed)
        "scattered": pool[:36],
        "contiguous": np.arange(150, 174),
        "single": pool[40:41],
        "silent": np.array([300, 301, 302]),
    }
    all_feats = np.union1d(pool, np.arange(150, 174))
    rows = _rows(rng, lengths, all_feats)
    shuffled = {k: v[rng.permutation(len(v))] for k, v in rows.items()}
    peaks = _neighbor_peaks(rng, lengths, all_feats, rows, 6)
    runs = {}
    for cfg_name, cfg in SELECT_CONFIGS.items():
        for seed in (0, 2**63 + 12345):
            for chunk_name, feats in chunks.items():
                given = shuffled if chunk_name == "scattered" else rows
                status, refs = select_chunk(feats, given, lengths, cfg, seed, lambda ids: take_contexts(corpus, ids),
                                             peaks)
                assert refs["sample_set"].dtype == np.int8 and refs["kind"].dtype == np.int8
                lines = []
                for i, f in enumerate(status["feature"]):
                    m = refs["feature"] == f
                    wins = zip((SAMPLE_SETS[j] for j in refs["sample_set"][m]),
                               (WINDOW_KINDS[j] for j in refs["kind"][m]),
                               *(refs[k][m] for k in ("rank", "context_id", "start", "length")))
                    lines.append(_feature_line(f, status["status"][i], status["reason"][i],
                                               status["n_candidates"][i], wins))
                params = {"config": cfg.to_dict(), "seed": seed, "chunk": chunk_name,
                          "dtypes": {k: str(v.dtype) for k, v in sorted(refs.items())},
                          "status_dtypes": {k: type(v).__name__ if isinstance(v, list) else str(v.dtype)
                                            for k, v in sorted(status.items())}}
                runs[f"{cfg_name}/seed{seed}/{chunk_name}"] = (params, lines)
    header = {"contexts": len(lengths), "tokens": int(lengths.sum()), "rows": len(rows["value"])}
    _check(_dump(header, runs), "sampler_select.json")


def test_enum_values_are_the_store_indices():
    assert SAMPLE_SETS == ("explain", "score") and WINDOW_KINDS == ("top", "quantile", "random", "neighbor")
    assert [SAMPLE_SETS[s] for s in SampleSet] == [s.name.lower() for s in SampleSet]
    assert [WINDOW_KINDS[k] for k in WindowKind] == [k.name.lower() for k in WindowKind]
