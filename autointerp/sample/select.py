"""Choose the windows of a chunk of features at once, vectorised over features (no per-feature loop).

Rules, per feature (see docs/explanation/sampler.md), each with the phase function that applies it:
1. Candidate windows: each context is cut into slots of `window` tokens; the highest activation of a
   slot is a peak, and its window puts the peak at `offset` (clamped inside the context). Overlapping
   candidates of the same context are suppressed in favour of the higher peak (non-maximum
   suppression), so no two candidates share a token.
   -> `find_candidates` (`_slot_peaks`, `_place_windows`, `_suppress_overlaps`)
2. Candidates are ranked by peak value. The top `n_top` go to the explain set. The rest are cut
   into `n_quantiles` equal-count bins by peak value; from each bin, in keyed-hash order, the first
   windows go to the explain set ("quantile") and the next ones to the score set ("quantile").
   A feature with fewer candidates than all budgets together gets every budget scaled down in
   proportion, so rare features still keep a held-out score set.
   -> `rank_candidates`, then `split_ranked` (`_budgets`, `_quantile_bins`, `_deal_bins`)
3. Windows whose token content repeats an activating window already chosen for the feature are
   dropped (priority: top, then explain quantile, then score quantile).
   -> `drop_repeated_content`
4. Non-firing windows ("random"): keyed-hash draws of (context, start) where the feature is zero
   on every token and which overlap no explain window. Optional "neighbor" hard negatives: the
   peak windows of the feature's stored neighbours, under the same conditions.
   -> `random_negatives`, `neighbor_negatives` (both through `_nonfiring`)
Explain and score sets are disjoint by construction: candidates never overlap one another, and
non-firing windows cannot be activating windows.

`select_chunk` runs the phases in that order over small records of numpy arrays, one element per
row or window of the whole chunk: `ChunkRows` -> `Candidates` -> `Ranked` -> `Split` -> `Chosen`
(activating, then with the negatives), and hands the store `refs` (see `_refs`) and a status per feature.
A feature is always its chunk-local index (0..len(features)-1) inside the phases; `_refs` maps it back.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..arrays import argsort_keys, is_sorted_rows, orderable_u32, segment_starts, sort_rows
from ..records import SamplerConfig
from .keys import MAX_CHUNK_FEATURES, MAX_CONTEXTS, cell_key, keyed, window_hashes
from .windows import (Budgets, Candidates, Chosen, Chunk, ChunkRows, Occupied, Ranked, SampleSet, Split, Windows,
                      WindowKind)


# -- the pipeline -----------------------------------------------------------------------------------

def select_chunk(features: np.ndarray, rows: dict[str, np.ndarray], lengths: np.ndarray, cfg: SamplerConfig,
                 seed: int, read_tokens: Callable[[np.ndarray], dict],
                 neighbor_peaks: dict[str, np.ndarray] | None = None):
    """Sample every feature in `features` (sorted ids) from its activation rows.

    rows: all activation rows of those features (feature, context_id, position, value).
    neighbor_peaks: optional {"feature", "context", "position"} — per feature, its neighbours' peak
    locations in preference order.
    Returns (status, refs): per-feature arrays and per-window arrays (`sample_set` and `kind` as
    indices into SAMPLE_SETS and WINDOW_KINDS).
    """
    chunk = Chunk(np.asarray(features, dtype=np.int64), np.asarray(lengths, dtype=np.int64), cfg, seed)
    _check_chunk(chunk)
    act_rows = chunk_rows(chunk, rows)
    ranked = rank_candidates(chunk, find_candidates(chunk, act_rows))
    ok = ranked.n_candidates >= cfg.min_windows
    activating = drop_repeated_content(activating_windows(ranked, split_ranked(chunk, ranked, ok)), read_tokens)
    occupied = _occupied(act_rows, activating)
    chosen = Chosen.concat([activating, random_negatives(chunk, ok, occupied),
                            neighbor_negatives(chunk, ok, occupied, neighbor_peaks)])
    return _status(chunk, ranked.n_candidates, ok, chosen), _refs(chunk, chosen)


def _check_chunk(chunk: Chunk) -> None:
    if len(chunk.lengths) > MAX_CONTEXTS:
        raise ValueError(f"corpus has {len(chunk.lengths)} contexts; the sampler supports up to {MAX_CONTEXTS}")
    if not 0 < len(chunk.features) <= MAX_CHUNK_FEATURES:
        raise ValueError(f"a chunk holds 1..{MAX_CHUNK_FEATURES} features, got {len(chunk.features)}")


def chunk_rows(chunk: Chunk, rows: dict[str, np.ndarray]) -> ChunkRows:
    """The rows of the chunk's features, sorted, with features as chunk-local indices."""
    f, c, p, v = rows["feature"], rows["context_id"], rows["position"], rows["value"]
    if not is_sorted_rows(f, c, p):
        f, c, p, v = sort_rows(f, c, p, v)
    local, inside = _local_index(chunk.features, f)
    if not inside.all():
        local, c, p, v = local[inside], c[inside], p[inside], v[inside]
    return ChunkRows(local, c.astype(np.int64), p, v)


def _local_index(features: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chunk-local index of each global feature id, and whether the id is in the chunk at all."""
    n = len(features)
    if features[-1] - features[0] + 1 == n:  # a contiguous range: index by subtraction
        local = ids.astype(np.int64) - features[0]
        return local, (local >= 0) & (local < n)
    local = np.searchsorted(features, ids)
    return local, (local < n) & (features[np.minimum(local, n - 1)] == ids)


# -- rule 1: candidates -------------------------------------------------------------------------------

def find_candidates(chunk: Chunk, rows: ChunkRows) -> Candidates:
    """Peak windows per (feature, context, slot) after non-maximum suppression."""
    if len(rows.feature) == 0:
        return Candidates.empty()
    peak_row = _slot_peaks(rows, chunk.cfg.window)
    context = rows.context[peak_row]
    start, length = _place_windows(chunk, context, rows.position[peak_row])
    found = Candidates(rows.feature[peak_row], context, start, length, rows.value[peak_row].astype(np.float32))
    return found.take(_suppress_overlaps(found))


def _slot_peaks(rows: ChunkRows, window: int) -> np.ndarray:
    """The row of the highest value of each (feature, context, slot) group (its first row on ties)."""
    n = len(rows.feature)
    f, c, slot = rows.feature, rows.context, rows.position // window
    new_group = np.empty(n, dtype=bool)
    new_group[:1] = True
    new_group[1:] = (f[1:] != f[:-1]) | (c[1:] != c[:-1]) | (slot[1:] != slot[:-1])
    # the max of each group and its first row, in one reduction: value bits above the inverted row index
    low = np.uint64(0xFFFFFFFF)
    packed = (orderable_u32(rows.value).astype(np.uint64) << np.uint64(32)) | (low - np.arange(n, dtype=np.uint64))
    best = np.maximum.reduceat(packed, np.flatnonzero(new_group))
    return (low - (best & low)).astype(np.int64)


def _place_windows(chunk: Chunk, context: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of the window that puts `position` at the config's offset, clamped in its context."""
    window, offset, lengths = chunk.cfg.window, chunk.cfg.offset, chunk.lengths
    if len(lengths) and lengths.min() == lengths.max():  # fixed-length contexts: no per-window lookups
        length = min(window, int(lengths[0]))
        start = np.clip(position.astype(np.int64) - offset, 0, int(lengths[0]) - length)
        return start, np.full(len(context), length, dtype=np.int64)
    context_length = lengths[context]
    length = np.minimum(window, context_length)
    return np.clip(position.astype(np.int64) - offset, 0, context_length - length), length


def _suppress_overlaps(c: Candidates) -> np.ndarray:
    """Mask of the candidates kept when overlapping ones of a (feature, context) keep the higher peak.

    Only neighbouring candidates of one (feature, context) can overlap; resolve until none do, looking
    again only at the (feature, context) groups that had an overlap."""
    keep = np.ones(len(c), dtype=bool)
    same = (c.feature[1:] == c.feature[:-1]) & (c.context[1:] == c.context[:-1])
    overlap = same & (c.start[1:] < c.start[:-1] + c.length[:-1])
    if not overlap.any():
        return keep
    group = np.concatenate(([0], np.cumsum(~same)))
    dirty = np.zeros(group[-1] + 1, dtype=bool)
    dirty[group[1:][overlap]] = True
    live = np.flatnonzero(dirty[group])
    while True:
        a, b = live[:-1], live[1:]
        same = (c.feature[a] == c.feature[b]) & (c.context[a] == c.context[b])
        overlap = same & (c.start[b] < c.start[a] + c.length[a])
        if not overlap.any():
            return keep
        a_wins = c.peak[a] >= c.peak[b]
        keep[b[overlap & a_wins]] = False
        keep[a[overlap & ~a_wins]] = False
        live = live[keep[live]]


# -- rule 2: rank and split ------------------------------------------------------------------------------

def _bits(n: int) -> int:
    """Bits that hold 0..n-1 (at least 1)."""
    return max(n - 1, 1).bit_length()


def rank_candidates(chunk: Chunk, c: Candidates) -> Ranked:
    """Order candidates by feature, then peak value descending, ties in keyed-hash order."""
    draw = keyed(chunk.seed, chunk.features[c.feature], c.context, c.start)
    fb = _bits(len(chunk.features))
    key = ((c.feature.astype(np.uint64) << np.uint64(64 - fb))
           | ((~orderable_u32(c.peak)).astype(np.uint64) << np.uint64(32 - fb)) | (draw >> np.uint64(32 + fb)))
    order = argsort_keys(key, draw, c.context, c.start)
    c = c.take(order)
    return Ranked(c, draw[order], _cumcount(c.feature), np.bincount(c.feature, minlength=len(chunk.features)))


def _budgets(n_candidates: np.ndarray, cfg: SamplerConfig) -> Budgets:
    """The config's budgets, scaled down in proportion for features with fewer candidates than all of them."""
    top, quantile, score = cfg.n_top, cfg.n_quantile_explain, cfg.n_score_activating
    need = max(top + quantile + score, 1)
    scarce = n_candidates < need
    top_n = np.where(scarce, np.maximum(min(top, 1), (top * n_candidates) // need), top)
    quantile_n = np.where(scarce, (quantile * n_candidates) // need, quantile)
    score_n = np.clip(np.where(scarce, n_candidates - top_n - quantile_n, score), 0, score)
    return Budgets(top_n, quantile_n, score_n)


def split_ranked(chunk: Chunk, ranked: Ranked, ok: np.ndarray) -> Split:
    """Top windows, then per quantile bin the explain windows and the held-out score windows."""
    budget = _budgets(ranked.n_candidates, chunk.cfg)
    f = ranked.windows.feature
    in_ok = ok[f]
    is_top = in_ok & (ranked.rank < budget.top[f])
    rest = np.flatnonzero(in_ok & ~is_top)
    explain_quantile, score_quantile = _deal_bins(chunk, ranked, budget, rest)
    return Split(np.flatnonzero(is_top), explain_quantile, score_quantile)


def _quantile_bins(chunk: Chunk, ranked: Ranked, budget: Budgets, rest: np.ndarray):
    """The equal-count bin of each ranked candidate in `rest` (past its feature's top windows), and how
    many bins each feature has (fewer than `n_quantiles` when it has fewer windows left)."""
    n_rest = np.maximum(ranked.n_candidates - budget.top, 1)
    n_bins = np.minimum(chunk.cfg.n_quantiles, n_rest)
    f = ranked.windows.feature[rest]
    return ((ranked.rank[rest] - budget.top[f]) * n_bins[f]) // n_rest[f], n_bins


def _per_bin(total: np.ndarray, n_bins: np.ndarray, n_quantiles: int) -> np.ndarray:
    """[feature, bin]: `total` windows of each feature spread over its bins as evenly as whole numbers go."""
    edges = np.arange(n_quantiles + 1)[None, :] * total[:, None] // n_bins[:, None]
    return edges[:, 1:] - edges[:, :-1]


def _deal_bins(chunk: Chunk, ranked: Ranked, budget: Budgets, rest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From each (feature, bin), in keyed-hash order: the first windows to explain, the next to score."""
    nq = chunk.cfg.n_quantiles
    bin_, n_bins = _quantile_bins(chunk, ranked, budget, rest)
    f = ranked.windows.feature[rest]
    fb, qb = _bits(len(chunk.features)), _bits(nq)
    key = ((f.astype(np.uint64) << np.uint64(64 - fb)) | (bin_.astype(np.uint64) << np.uint64(64 - fb - qb))
           | (ranked.draw[rest] >> np.uint64(fb + qb)))
    order = argsort_keys(key, ranked.draw, ranked.windows.context, ranked.windows.start, index=rest)
    rest, cell = rest[order], f[order] * nq + bin_[order]
    n_explain = _per_bin(budget.quantile_explain, n_bins, nq).ravel()[cell]
    n_score = _per_bin(budget.score_activating, n_bins, nq).ravel()[cell]
    at = _cumcount(cell)
    return rest[at < n_explain], rest[(at >= n_explain) & (at < n_explain + n_score)]


def activating_windows(ranked: Ranked, split: Split) -> Chosen:
    """The split's windows in priority order: top, explain quantile, score quantile."""
    w = ranked.windows
    return Chosen.concat([Chosen.of(w.take(split.top), SampleSet.EXPLAIN, WindowKind.TOP),
                          Chosen.of(w.take(split.explain_quantile), SampleSet.EXPLAIN, WindowKind.QUANTILE),
                          Chosen.of(w.take(split.score_quantile), SampleSet.SCORE, WindowKind.QUANTILE)])


# -- rule 3: repeated content ----------------------------------------------------------------------------

def drop_repeated_content(act: Chosen, read_tokens: Callable[[np.ndarray], dict]) -> Chosen:
    """Drop activating windows whose tokens repeat an earlier (higher-priority) window of the same feature."""
    if len(act) == 0:
        return act
    content = window_hashes(read_tokens(np.unique(act.context)), act.context, act.start, act.length)
    content = keyed(0, content, act.feature)  # one key per (feature, content)
    order = np.argsort(content, kind="stable")  # equal content: the first (highest priority) stays
    sorted_content = content[order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = sorted_content[1:] == sorted_content[:-1]
    return act.take(np.sort(order[~repeat]))


# -- rule 4: non-firing windows ------------------------------------------------------------------------

def _occupied(rows: ChunkRows, act: Chosen) -> Occupied:
    ex = act.sample_set == SampleSet.EXPLAIN
    return Occupied(cell_key(rows.feature, rows.context, rows.position),
                    np.sort(cell_key(act.feature[ex], act.context[ex], act.start[ex])))


def random_negatives(chunk: Chunk, ok: np.ndarray, occupied: Occupied) -> Chosen:
    """`n_score_nonfiring` keyed-hash draws per feature that pass `_nonfiring`, fewer if not found."""
    n, live = chunk.cfg.n_score_nonfiring, np.flatnonzero(ok)
    if not n or not len(live):
        return Chosen.empty()
    draws, keep = _random_draws(chunk, live, occupied, n + n // 4 + 8)
    short = live[np.bincount(draws.feature[keep], minlength=len(chunk.features))[live] < n]
    if len(short):  # dense features: most draws hit a firing token; draw more for them alone
        redo = np.isin(draws.feature, short)
        more, more_keep = _random_draws(chunk, short, occupied, 4 * n + 8)
        draws, keep = Windows.concat([draws.take(~redo), more]), np.concatenate([keep[~redo], more_keep])
    return Chosen.of(draws.take(keep), SampleSet.SCORE, WindowKind.RANDOM)


def _random_draws(chunk: Chunk, live: np.ndarray, occupied: Occupied, n_draws: int) -> tuple[Windows, np.ndarray]:
    """Draws j = 0..n_draws-1 of (context, start) per live feature, and the mask of those `_nonfiring` keeps.
    Draw j of a feature is the same whatever n_draws is, so a second, bigger round extends the first."""
    local = np.repeat(live, n_draws)
    j = np.tile(np.arange(n_draws), len(live))
    feature = chunk.features[local]
    context = (keyed(chunk.seed, feature, j, 1) % np.uint64(len(chunk.lengths))).astype(np.int64)
    context_length = chunk.lengths[context]
    length = np.minimum(chunk.cfg.window, context_length)
    start = (keyed(chunk.seed, feature, j, 2) % (context_length - length + 1).astype(np.uint64)).astype(np.int64)
    draws = Windows(local, context, start, length)
    return draws, _nonfiring(draws, occupied, chunk.cfg.n_score_nonfiring)


def neighbor_negatives(chunk: Chunk, ok: np.ndarray, occupied: Occupied,
                       neighbor_peaks: dict[str, np.ndarray] | None) -> Chosen:
    """Up to `n_neighbor_negatives` of the neighbours' peak windows per feature that pass `_nonfiring`."""
    if not chunk.cfg.n_neighbor_negatives or neighbor_peaks is None or not ok.any():
        return Chosen.empty()
    local, inside = _local_index(chunk.features, neighbor_peaks["feature"])
    of_ok = inside.copy()
    of_ok[inside] = ok[local[inside]]
    context = neighbor_peaks["context"][of_ok].astype(np.int64)
    start, length = _place_windows(chunk, context, neighbor_peaks["position"][of_ok])
    peaks = Windows(local[of_ok], context, start, length)
    return Chosen.of(peaks.take(_nonfiring(peaks, occupied, chunk.cfg.n_neighbor_negatives)),
                     SampleSet.SCORE, WindowKind.NEIGHBOR)


def _nonfiring(w: Windows, occupied: Occupied, per_feature: int) -> np.ndarray:
    """Mask of windows that are zero throughout, overlap no explain window, repeat no earlier window,
    keeping the first `per_feature` of each feature in order (w.feature must be grouped, in order)."""
    # zero throughout: the first firing cell at or after the window's start lies beyond its end
    start = cell_key(w.feature, w.context, w.start)
    end = cell_key(w.feature, w.context, w.start + w.length)
    valid = _first_at_or_after(occupied.firing, start) >= end
    # overlaps no explain window: none starts in [start - length + 1, start + length)
    earliest = cell_key(w.feature, w.context, np.maximum(w.start - w.length + 1, 0))
    valid &= _first_at_or_after(occupied.explain_starts, earliest) >= end
    _, first = np.unique(start, return_index=True)
    first_of_its_kind = np.zeros(len(start), dtype=bool)
    first_of_its_kind[first] = True
    valid &= first_of_its_kind
    idx = np.flatnonzero(valid)
    keep = np.zeros(len(start), dtype=bool)
    keep[idx[_cumcount(w.feature[idx]) < per_feature]] = True
    return keep


def _first_at_or_after(sorted_keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The smallest element of sorted_keys >= each query (2**64 - 1 when there is none)."""
    i = np.searchsorted(sorted_keys, q)
    out = np.full(len(q), np.iinfo(np.uint64).max, dtype=np.uint64)
    inside = i < len(sorted_keys)
    out[inside] = sorted_keys[i[inside]]
    return out


# -- output ---------------------------------------------------------------------------------------------

def _refs(chunk: Chunk, chosen: Chosen) -> dict[str, np.ndarray]:
    """Per-window arrays for the store, by feature, set and kind; `rank` counts within (feature, set)."""
    order = np.lexsort((np.arange(len(chosen)), chosen.kind, chosen.sample_set, chosen.feature))
    c = chosen.take(order)
    rank = _cumcount(c.feature * 2 + c.sample_set)
    return {"feature": chunk.features[c.feature], "sample_set": c.sample_set.astype(np.int8),
            "kind": c.kind.astype(np.int8), "rank": rank,
            "context_id": c.context, "start": c.start, "length": c.length}


def _status(chunk: Chunk, n_candidates: np.ndarray, ok: np.ndarray, chosen: Chosen) -> dict:
    """Per feature: status (ok, too_rare, dead), the reason when it is not plainly ok, the candidate count."""
    status = np.where(n_candidates == 0, "dead", np.where(ok, "ok", "too_rare")).astype(object)
    return {"feature": chunk.features, "status": status.tolist(),
            "reason": _reasons(chunk, n_candidates, ok, chosen), "n_candidates": n_candidates}


def _reasons(chunk: Chunk, n_candidates: np.ndarray, ok: np.ndarray, chosen: Chosen) -> list[str]:
    cfg, nf = chunk.cfg, len(chunk.features)
    held_out = (chosen.sample_set == SampleSet.SCORE) & (chosen.kind == WindowKind.QUANTILE)
    n_held_out = np.bincount(chosen.feature[held_out], minlength=nf)
    n_random = np.bincount(chosen.feature[chosen.kind == WindowKind.RANDOM], minlength=nf)
    reason = np.full(nf, "", dtype=object)
    reason[n_candidates == 0] = "dead: never fires in the corpus"
    for i in np.flatnonzero(~ok & (n_candidates > 0)):
        reason[i] = f"too rare: {n_candidates[i]} activating windows, fewer than min_windows={cfg.min_windows}"
    for i in np.flatnonzero(ok & ((n_held_out < cfg.n_score_activating) | (n_random < cfg.n_score_nonfiring))):
        notes = []
        if n_held_out[i] < cfg.n_score_activating:
            notes.append(f"{n_held_out[i]} of {cfg.n_score_activating} held-out activating windows")
        if n_random[i] < cfg.n_score_nonfiring:
            notes.append(f"{n_random[i]} of {cfg.n_score_nonfiring} non-firing windows found")
        reason[i] = "; ".join(notes)
    return reason.tolist()


def _cumcount(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal values of a sorted array."""
    if len(groups) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = segment_starts(groups)
    lens = np.diff(np.append(starts, len(groups)))
    return np.arange(len(groups)) - np.repeat(starts, lens)
