"""Choose the windows of a chunk of features at once, vectorised over features (no per-feature loop).

Rules, per feature (see README, "Sampler"):
1. Candidate windows: each context is cut into slots of `window` tokens; the highest activation of a
   slot is a peak, and its window puts the peak at `offset` (clamped inside the context). Overlapping
   candidates of the same context are suppressed in favour of the higher peak (non-maximum
   suppression), so no two candidates share a token.
2. Candidates are ranked by peak value. The top `n_top` go to the explain set. The rest are cut
   into `n_quantiles` equal-count bins by peak value; from each bin, in keyed-hash order, the first
   windows go to the explain set ("quantile") and the next ones to the score set ("quantile").
   A feature with fewer candidates than all budgets together gets every budget scaled down in
   proportion, so rare features still keep a held-out score set.
3. Windows whose token content repeats an activating window already chosen for the feature are
   dropped (priority: top, then explain quantile, then score quantile).
4. Non-firing windows ("random"): keyed-hash draws of (context, start) where the feature is zero
   on every token and which overlap no explain window. Optional "neighbor" hard negatives: the
   peak windows of the feature's stored neighbours, under the same conditions.
Explain and score sets are disjoint by construction: candidates never overlap one another, and
non-firing windows cannot be activating windows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..arrays import argsort_keys, is_sorted_rows, orderable_u32, segment_starts, sort_rows
from ..records import SamplerConfig
from .keys import MAX_CHUNK_FEATURES, MAX_CONTEXTS, cell_key, keyed, window_hashes

EXPLAIN, SCORE = "explain", "score"
SAMPLE_SETS = (EXPLAIN, SCORE)  # refs["sample_set"] holds indices into this
WINDOW_KINDS = ("top", "quantile", "random", "neighbor")  # refs["kind"] holds indices into this


def _cumcount(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal values of a sorted array."""
    if len(groups) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = segment_starts(groups)
    lens = np.diff(np.append(starts, len(groups)))
    return np.arange(len(groups)) - np.repeat(starts, lens)


def _candidates(fidx, c, p, v, lengths, cfg: SamplerConfig):
    """Peak windows per (feature, context, slot) after non-maximum suppression."""
    W, off = cfg.window, cfg.offset
    n = len(fidx)
    if n == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e, e, np.zeros(0, dtype=np.float32)
    slot = p // W
    newg = np.empty(n, dtype=bool)
    newg[:1] = True
    newg[1:] = (fidx[1:] != fidx[:-1]) | (c[1:] != c[:-1]) | (slot[1:] != slot[:-1])
    gstart = np.flatnonzero(newg)
    # the max of each group and its first row, in one reduction: value bits above the inverted row index
    packed = (orderable_u32(v).astype(np.uint64) << np.uint64(32)) | (
        np.uint64(0xFFFFFFFF) - np.arange(n, dtype=np.uint64))
    best = np.maximum.reduceat(packed, gstart)
    first = (np.uint64(0xFFFFFFFF) - (best & np.uint64(0xFFFFFFFF))).astype(np.int64)
    cf, cc = fidx[first], c[first]
    cv = v[first].astype(np.float32)
    if len(lengths) and lengths.min() == lengths.max():  # fixed-length contexts: no per-window lookups
        wl = min(W, int(lengths[0]))
        w = np.full(len(first), wl, dtype=np.int64)
        s = np.clip(p[first].astype(np.int64) - off, 0, int(lengths[0]) - wl)
    else:
        L = lengths[cc]
        w = np.minimum(W, L)
        s = np.clip(p[first].astype(np.int64) - off, 0, L - w)
    # only neighbouring candidates of one (feature, context) can overlap; resolve until none do,
    # looking again only at the (feature, context) groups that had an overlap
    keep = np.ones(len(cf), dtype=bool)
    same = (cf[1:] == cf[:-1]) & (cc[1:] == cc[:-1])
    ov = same & (s[1:] < s[:-1] + w[:-1])
    if ov.any():
        gid = np.concatenate(([0], np.cumsum(~same)))
        dirty = np.zeros(gid[-1] + 1, dtype=bool)
        dirty[gid[1:][ov]] = True
        idx = np.flatnonzero(dirty[gid])
        while True:
            a, b = idx[:-1], idx[1:]
            ov = (cf[a] == cf[b]) & (cc[a] == cc[b]) & (s[b] < s[a] + w[a])
            if not ov.any():
                break
            a_wins = cv[a] >= cv[b]
            keep[b[ov & a_wins]] = False
            keep[a[ov & ~a_wins]] = False
            idx = idx[keep[idx]]
    return cf[keep], cc[keep], s[keep], w[keep], cv[keep]


def _budgets(A: np.ndarray, cfg: SamplerConfig):
    T, Q, S = cfg.n_top, cfg.n_quantile_explain, cfg.n_score_activating
    need = max(T + Q + S, 1)
    scarce = A < need
    Tp = np.where(scarce, np.maximum(min(T, 1), (T * A) // need), T)
    Qp = np.where(scarce, (Q * A) // need, Q)
    Sp = np.clip(np.where(scarce, A - Tp - Qp, S), 0, S)
    return Tp, Qp, Sp


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
    features = np.asarray(features, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) > MAX_CONTEXTS:
        raise ValueError(f"corpus has {len(lengths)} contexts; the sampler supports up to {MAX_CONTEXTS}")
    nf = len(features)
    if not 0 < nf <= MAX_CHUNK_FEATURES:
        raise ValueError(f"a chunk holds 1..{MAX_CHUNK_FEATURES} features, got {nf}")
    f, c, p, v = rows["feature"], rows["context_id"], rows["position"], rows["value"]
    if not is_sorted_rows(f, c, p):
        f, c, p, v = sort_rows(f, c, p, v)
    if features[-1] - features[0] + 1 == nf:  # a contiguous range: index by subtraction
        fi = f.astype(np.int64) - features[0]
        inside = (fi >= 0) & (fi < nf)
    else:
        fi = np.searchsorted(features, f)
        inside = (fi < nf) & (features[np.minimum(fi, nf - 1)] == f)
    if not inside.all():
        fi, c, p, v = fi[inside], c[inside], p[inside], v[inside]
    c = c.astype(np.int64)

    cf, cc, s, w, cv = _candidates(fi, c, p, v, lengths, cfg)
    u = keyed(seed, features[cf], cc, s)
    # rank within each feature: peak value descending, ties in keyed-hash order
    fb = max(nf - 1, 1).bit_length()
    key = ((cf.astype(np.uint64) << np.uint64(64 - fb))
           | ((~orderable_u32(cv)).astype(np.uint64) << np.uint64(32 - fb)) | (u >> np.uint64(32 + fb)))
    order = argsort_keys(key, u, cc, s)
    cf, cc, s, w, cv, u = cf[order], cc[order], s[order], w[order], cv[order], u[order]
    A = np.bincount(cf, minlength=nf)
    ok = A >= cfg.min_windows
    r = _cumcount(cf)
    Tp, Qp, Sp = _budgets(A, cfg)

    okc = ok[cf]
    is_top = okc & (r < Tp[cf])
    n_rest = np.maximum(A - Tp, 1)
    nb = np.minimum(cfg.n_quantiles, n_rest)
    ri = np.flatnonzero(okc & ~is_top)
    fr = cf[ri]
    b = ((r[ri] - Tp[fr]) * nb[fr]) // n_rest[fr]
    # per (feature, bin): how many explain and score windows the bin gives
    bins = np.arange(cfg.n_quantiles)
    e_tab = ((bins + 1) * Qp[:, None]) // nb[:, None] - (bins * Qp[:, None]) // nb[:, None]
    s_tab = ((bins + 1) * Sp[:, None]) // nb[:, None] - (bins * Sp[:, None]) // nb[:, None]
    # within each (feature, bin), keyed-hash order
    qb = max(cfg.n_quantiles - 1, 1).bit_length()
    key = ((fr.astype(np.uint64) << np.uint64(64 - fb)) | (b.astype(np.uint64) << np.uint64(64 - fb - qb))
           | (u[ri] >> np.uint64(fb + qb)))
    o = argsort_keys(key, u, cc, s, index=ri)
    ri, fbin = ri[o], fr[o] * cfg.n_quantiles + b[o]
    eb, sb = e_tab.ravel()[fbin], s_tab.ravel()[fbin]
    rib = _cumcount(fbin)
    eq = ri[rib < eb]
    sq = ri[(rib >= eb) & (rib < eb + sb)]
    top = np.flatnonzero(is_top)

    # activating windows in priority order, then drop repeated token content within a feature
    act = np.concatenate([top, eq, sq])
    prio = np.concatenate([np.zeros(len(top)), np.ones(len(eq)), np.full(len(sq), 2)]).astype(np.int64)
    act, prio = _dedupe_content(act, prio, cf, cc, s, w, read_tokens)
    a_set = np.where(prio < 2, 0, 1)  # 0 explain, 1 score
    a_kind = np.where(prio == 0, 0, 1)  # 0 top, 1 quantile

    # explain windows of each feature, for the overlap test of non-firing draws
    ex = act[a_set == 0]
    ex_keys = np.sort(cell_key(cf[ex], cc[ex], s[ex]))
    row_keys = cell_key(fi, c, p)
    live = np.flatnonzero(ok)
    neg_f, neg_c, neg_s, neg_w, neg_kind = [], [], [], [], []
    if cfg.n_score_nonfiring and len(live):
        n = cfg.n_score_nonfiring
        rf, rc, rs, wr, take = _random_draws(live, features, lengths, cfg, seed, row_keys, ex_keys, n + n // 4 + 8)
        short = np.flatnonzero(np.bincount(rf[take], minlength=nf)[live] < n)
        if len(short):  # dense features: most draws hit a firing token; draw more for them alone
            redo = np.isin(rf, live[short])
            more = _random_draws(live[short], features, lengths, cfg, seed, row_keys, ex_keys, 4 * n + 8)
            rf, rc, rs, wr, take = (np.concatenate([x[~redo], y]) for x, y in zip((rf, rc, rs, wr, take), more))
        for lst, x in zip((neg_f, neg_c, neg_s, neg_w), (rf, rc, rs, wr)):
            lst.append(x[take])
        neg_kind.append(np.full(int(take.sum()), 2))
    if cfg.n_neighbor_negatives and neighbor_peaks is not None and len(live):
        nf_idx = np.searchsorted(features, neighbor_peaks["feature"])
        m = (nf_idx < nf) & (features[np.minimum(nf_idx, nf - 1)] == neighbor_peaks["feature"])
        nf_idx = nf_idx[m]
        m2 = ok[nf_idx]
        nf_idx = nf_idx[m2]
        hc = neighbor_peaks["context"][m][m2].astype(np.int64)
        hp = neighbor_peaks["position"][m][m2].astype(np.int64)
        hl = lengths[hc]
        hw = np.minimum(cfg.window, hl)
        hs = np.clip(hp - cfg.offset, 0, hl - hw)
        take = _nonfiring(nf_idx, hc, hs, hw, row_keys, ex_keys, cfg.n_neighbor_negatives)
        for lst, x in zip((neg_f, neg_c, neg_s, neg_w), (nf_idx, hc, hs, hw)):
            lst.append(x[take])
        neg_kind.append(np.full(int(take.sum()), 3))

    nfa = np.concatenate([cf[act]] + neg_f) if neg_f else cf[act]
    out_set = np.concatenate([a_set] + [np.ones(len(x), np.int64) for x in neg_f])
    out_kind = np.concatenate([a_kind] + neg_kind)
    out_c = np.concatenate([cc[act]] + neg_c)
    out_s = np.concatenate([s[act]] + neg_s)
    out_w = np.concatenate([w[act]] + neg_w)
    o = np.lexsort((np.arange(len(nfa)), out_kind, out_set, nfa))
    nfa, out_set, out_kind, out_c, out_s, out_w = (x[o] for x in (nfa, out_set, out_kind, out_c, out_s, out_w))
    rank = _cumcount(nfa * 2 + out_set)
    refs = {"feature": features[nfa], "sample_set": out_set.astype(np.int8), "kind": out_kind.astype(np.int8),
            "rank": rank, "context_id": out_c, "start": out_s, "length": out_w}

    n_score_act = np.bincount(nfa[(out_set == 1) & (out_kind == 1)], minlength=nf)
    n_random = np.bincount(nfa[out_kind == 2], minlength=nf)
    status = np.where(A == 0, "dead", np.where(ok, "ok", "too_rare")).astype(object)
    reason = np.full(nf, "", dtype=object)
    reason[A == 0] = "dead: never fires in the corpus"
    for i in np.flatnonzero(~ok & (A > 0)):
        reason[i] = f"too rare: {A[i]} activating windows, fewer than min_windows={cfg.min_windows}"
    for i in np.flatnonzero(ok & ((n_score_act < cfg.n_score_activating) | (n_random < cfg.n_score_nonfiring))):
        notes = []
        if n_score_act[i] < cfg.n_score_activating:
            notes.append(f"{n_score_act[i]} of {cfg.n_score_activating} held-out activating windows")
        if n_random[i] < cfg.n_score_nonfiring:
            notes.append(f"{n_random[i]} of {cfg.n_score_nonfiring} non-firing windows found")
        reason[i] = "; ".join(notes)
    return {"feature": features, "status": status.tolist(), "reason": reason.tolist(), "n_candidates": A}, refs


def _nonfiring(fidx, ctx, start, width, row_keys, ex_keys, per_feature: int) -> np.ndarray:
    """Mask of draws that are zero throughout, overlap no explain window, repeat no earlier draw,
    keeping the first `per_feature` of each feature in draw order (fidx must be grouped, in order)."""
    # zero throughout: the first firing cell at or after the window's start lies beyond its end
    k = cell_key(fidx, ctx, start)
    end = cell_key(fidx, ctx, start + width)
    valid = _first_at_or_after(row_keys, k) >= end
    # overlaps no explain window: none starts in [start - width + 1, start + width)
    valid &= _first_at_or_after(ex_keys, cell_key(fidx, ctx, np.maximum(start - width + 1, 0))) >= end
    _, first = np.unique(k, return_index=True)
    uniq = np.zeros(len(k), dtype=bool)
    uniq[first] = True
    valid &= uniq
    idx = np.flatnonzero(valid)
    keep = np.zeros(len(k), dtype=bool)
    keep[idx[_cumcount(fidx[idx]) < per_feature]] = True
    return keep


def _random_draws(live, features, lengths, cfg: SamplerConfig, seed: int, row_keys, ex_keys, K: int):
    """Draws j = 0..K-1 of (context, start) per live feature, and the mask of those `_nonfiring` keeps.
    Draw j of a feature is the same whatever K is, so a second, bigger round extends the first."""
    rf = np.repeat(live, K)
    j = np.tile(np.arange(K), len(live))
    gf = features[rf]
    rc = (keyed(seed, gf, j, 1) % np.uint64(len(lengths))).astype(np.int64)
    Lr = lengths[rc]
    wr = np.minimum(cfg.window, Lr)
    rs = (keyed(seed, gf, j, 2) % (Lr - wr + 1).astype(np.uint64)).astype(np.int64)
    return rf, rc, rs, wr, _nonfiring(rf, rc, rs, wr, row_keys, ex_keys, cfg.n_score_nonfiring)


def _first_at_or_after(sorted_keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The smallest element of sorted_keys >= each query (2**64 - 1 when there is none)."""
    i = np.searchsorted(sorted_keys, q)
    out = np.full(len(q), np.iinfo(np.uint64).max, dtype=np.uint64)
    inside = i < len(sorted_keys)
    out[inside] = sorted_keys[i[inside]]
    return out


def _dedupe_content(act, prio, cf, cc, s, w, read_tokens):
    """Drop activating windows whose tokens repeat a higher-priority window of the same feature."""
    if len(act) == 0:
        return act, prio
    h = window_hashes(read_tokens(np.unique(cc[act])), cc[act], s[act], w[act])
    h = keyed(0, h, cf[act])  # one key per (feature, content)
    order = np.argsort(h, kind="stable")  # equal content: the first (highest priority) stays
    hs = h[order]
    dup = np.zeros(len(order), dtype=bool)
    dup[1:] = hs[1:] == hs[:-1]
    keep = np.sort(order[~dup])
    return act[keep], prio[keep]
