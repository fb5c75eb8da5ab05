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

from ..arrays import is_sorted_rows, segment_starts, sort_rows
from ..records import SamplerConfig
from .keys import MAX_CONTEXTS, cell_key, keyed, window_hash

EXPLAIN, SCORE = "explain", "score"


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
    slot = p.astype(np.int64) // W
    newg = np.ones(len(fidx), dtype=bool)
    newg[1:] = (fidx[1:] != fidx[:-1]) | (c[1:] != c[:-1]) | (slot[1:] != slot[:-1])
    gstart = np.flatnonzero(newg)
    gid = np.cumsum(newg) - 1
    gmax = np.maximum.reduceat(v, gstart)
    hit = np.flatnonzero(v == gmax[gid])
    first = hit[segment_starts(gid[hit])]
    cf, cc, cv = fidx[first], c[first].astype(np.int64), gmax.astype(np.float64)
    L = lengths[cc]
    w = np.minimum(W, L)
    s = np.clip(p[first].astype(np.int64) - off, 0, L - w)
    keep = np.ones(len(cf), dtype=bool)
    while True:
        idx = np.flatnonzero(keep)
        a, b = idx[:-1], idx[1:]
        ov = (cf[a] == cf[b]) & (cc[a] == cc[b]) & (s[b] < s[a] + w[a])
        if not ov.any():
            break
        a_wins = cv[a] >= cv[b]
        keep[b[ov & a_wins]] = False
        keep[a[ov & ~a_wins]] = False
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
    Returns (status, refs): per-feature arrays and per-window arrays.
    """
    features = np.asarray(features, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) > MAX_CONTEXTS:
        raise ValueError(f"corpus has {len(lengths)} contexts; the sampler supports up to {MAX_CONTEXTS}")
    f, c, p, v = rows["feature"], rows["context_id"], rows["position"], rows["value"]
    if not is_sorted_rows(f, c, p):
        f, c, p, v = sort_rows(f, c, p, v)
    fi = np.searchsorted(features, f)
    inside = (fi < len(features)) & (features[np.minimum(fi, len(features) - 1)] == f)
    if not inside.all():
        fi, c, p, v = fi[inside], c[inside], p[inside], v[inside]
    c = c.astype(np.int64)
    nf = len(features)

    cf, cc, s, w, cv = _candidates(fi, c, p, v, lengths, cfg)
    u = keyed(seed, features[cf], cc, s)
    order = np.lexsort((u, -cv, cf))
    cf, cc, s, w, cv, u = cf[order], cc[order], s[order], w[order], cv[order], u[order]
    A = np.bincount(cf, minlength=nf)
    ok = A >= cfg.min_windows
    r = _cumcount(cf)
    Tp, Qp, Sp = _budgets(A, cfg)

    okc = ok[cf]
    is_top = okc & (r < Tp[cf])
    n_rest = np.maximum(A - Tp, 1)
    nb = np.minimum(cfg.n_quantiles, n_rest)
    b = ((r - Tp[cf]) * nb[cf]) // n_rest[cf]
    eb = ((b + 1) * Qp[cf]) // nb[cf] - (b * Qp[cf]) // nb[cf]
    sb = ((b + 1) * Sp[cf]) // nb[cf] - (b * Sp[cf]) // nb[cf]
    ri = np.flatnonzero(okc & ~is_top)
    ri = ri[np.lexsort((u[ri], b[ri], cf[ri]))]
    rib = _cumcount(cf[ri] * (cfg.n_quantiles + 1) + b[ri])
    eq = ri[rib < eb[ri]]
    sq = ri[(rib >= eb[ri]) & (rib < eb[ri] + sb[ri])]
    top = np.flatnonzero(is_top)

    # activating windows in priority order, then drop repeated token content within a feature
    act = np.concatenate([top, eq, sq])
    prio = np.concatenate([np.zeros(len(top)), np.ones(len(eq)), np.full(len(sq), 2)]).astype(np.int64)
    act, prio = _dedupe_content(act, prio, cf, cc, s, w, read_tokens, cfg.window)
    a_set = np.where(prio < 2, 0, 1)  # 0 explain, 1 score
    a_kind = np.where(prio == 0, 0, 1)  # 0 top, 1 quantile

    # explain windows of each feature, for the overlap test of non-firing draws
    ex = act[a_set == 0]
    ex_keys = np.sort(cell_key(cf[ex], cc[ex], s[ex]))
    row_keys = cell_key(fi, c, p)
    live = np.flatnonzero(ok)
    neg_f, neg_c, neg_s, neg_w, neg_kind = [], [], [], [], []
    if cfg.n_score_nonfiring and len(live):
        K = 4 * cfg.n_score_nonfiring + 8
        rf = np.repeat(live, K)
        j = np.tile(np.arange(K), len(live))
        gf = features[rf]
        rc = (keyed(seed, gf, j, 1) % np.uint64(len(lengths))).astype(np.int64)
        Lr = lengths[rc]
        wr = np.minimum(cfg.window, Lr)
        rs = (keyed(seed, gf, j, 2) % (Lr - wr + 1).astype(np.uint64)).astype(np.int64)
        take = _nonfiring(rf, rc, rs, wr, row_keys, ex_keys, cfg.n_score_nonfiring)
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

    kinds = np.array(["top", "quantile", "random", "neighbor"])
    nfa = np.concatenate([cf[act]] + neg_f) if neg_f else cf[act]
    out_set = np.concatenate([a_set] + [np.ones(len(x), np.int64) for x in neg_f])
    out_kind = np.concatenate([a_kind] + neg_kind)
    out_c = np.concatenate([cc[act]] + neg_c)
    out_s = np.concatenate([s[act]] + neg_s)
    out_w = np.concatenate([w[act]] + neg_w)
    o = np.lexsort((np.arange(len(nfa)), out_kind, out_set, nfa))
    nfa, out_set, out_kind, out_c, out_s, out_w = (x[o] for x in (nfa, out_set, out_kind, out_c, out_s, out_w))
    rank = _cumcount(nfa * 2 + out_set)
    refs = {"feature": features[nfa], "sample_set": np.array([EXPLAIN, SCORE])[out_set],
            "kind": kinds[out_kind], "rank": rank, "context_id": out_c, "start": out_s, "length": out_w}

    n_score_act = np.bincount(nfa[(out_set == 1) & (out_kind == 1)], minlength=nf)
    n_random = np.bincount(nfa[out_kind == 2], minlength=nf)
    status, reason = [], []
    for i in range(nf):
        if A[i] == 0:
            status.append("dead"); reason.append("dead: never fires in the corpus")
        elif not ok[i]:
            status.append("too_rare")
            reason.append(f"too rare: {A[i]} activating windows, fewer than min_windows={cfg.min_windows}")
        else:
            notes = []
            if n_score_act[i] < cfg.n_score_activating:
                notes.append(f"{n_score_act[i]} of {cfg.n_score_activating} held-out activating windows")
            if n_random[i] < cfg.n_score_nonfiring:
                notes.append(f"{n_random[i]} of {cfg.n_score_nonfiring} non-firing windows found")
            status.append("ok"); reason.append("; ".join(notes))
    return {"feature": features, "status": status, "reason": reason, "n_candidates": A}, refs


def _nonfiring(fidx, ctx, start, width, row_keys, ex_keys, per_feature: int) -> np.ndarray:
    """Mask of draws that are zero throughout, overlap no explain window, repeat no earlier draw,
    keeping the first `per_feature` of each feature in draw order (fidx must be grouped, in order)."""
    lo = np.searchsorted(row_keys, cell_key(fidx, ctx, start))
    hi = np.searchsorted(row_keys, cell_key(fidx, ctx, start + width))
    valid = lo == hi
    lo2 = np.searchsorted(ex_keys, cell_key(fidx, ctx, np.maximum(start - width + 1, 0)))
    hi2 = np.searchsorted(ex_keys, cell_key(fidx, ctx, start + width))
    valid &= lo2 == hi2
    k = cell_key(fidx, ctx, start)
    _, first = np.unique(k, return_index=True)
    uniq = np.zeros(len(k), dtype=bool)
    uniq[first] = True
    valid &= uniq
    idx = np.flatnonzero(valid)
    keep = np.zeros(len(k), dtype=bool)
    keep[idx[_cumcount(fidx[idx]) < per_feature]] = True
    return keep


def _dedupe_content(act, prio, cf, cc, s, w, read_tokens, W: int):
    """Drop activating windows whose tokens repeat a higher-priority window of the same feature."""
    if len(act) == 0:
        return act, prio
    toks = read_tokens(np.unique(cc[act]))
    row = np.searchsorted(toks["context_id"], cc[act])
    base = toks["offsets"][row] + s[act]
    j = np.arange(W)
    idx = base[:, None] + j[None, :]
    valid = j[None, :] < w[act][:, None]
    mat = np.where(valid, toks["token_ids"][np.where(valid, idx, 0)], -1)
    h = window_hash(mat)
    order = np.lexsort((prio, h, cf[act]))
    fa, ha = cf[act][order], h[order]
    dup = np.zeros(len(order), dtype=bool)
    dup[1:] = (fa[1:] == fa[:-1]) & (ha[1:] == ha[:-1])
    keep = np.sort(order[~dup])
    return act[keep], prio[keep]
