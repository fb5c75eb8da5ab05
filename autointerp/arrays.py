"""Vectorised helpers on sorted sparse activation arrays, shared by the store and the sampler."""

from __future__ import annotations

import numpy as np

DECILES = tuple(round(0.1 * i, 1) for i in range(1, 10))


def orderable_u32(values: np.ndarray) -> np.ndarray:
    """Map float32 values to uint32 keys with the same order (negatives and -0.0 included)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    neg = (bits >> 31).astype(bool)
    return np.where(neg, ~bits, bits | np.uint32(0x80000000)).astype(np.uint32)


def segment_starts(keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted 1-D array."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))


def is_sorted_rows(feature: np.ndarray, context: np.ndarray, position: np.ndarray) -> bool:
    """True when rows are in (feature, context, position) order, strictly (no duplicate cells)."""
    if len(feature) < 2:
        return True
    f = feature.astype(np.int64)
    c = context.astype(np.int64)
    p = position.astype(np.int64)
    df, dc, dp = np.diff(f), np.diff(c), np.diff(p)
    ok = (df > 0) | ((df == 0) & ((dc > 0) | ((dc == 0) & (dp > 0))))
    return bool(ok.all())


def sort_rows(feature, context, position, value):
    """Sort rows by (feature, context, position); returns the four arrays reordered."""
    order = np.lexsort((position, context, feature))
    return feature[order], context[order], position[order], value[order]


def feature_stats(feature: np.ndarray, context: np.ndarray, position: np.ndarray,
                  value: np.ndarray) -> dict[str, np.ndarray]:
    """Per-feature statistics of rows sorted by (feature, context, position), one entry per feature present.

    Quantile edges are the deciles of each feature's firing values, linear interpolation between
    order statistics (the same definition as numpy's default and DuckDB's quantile_cont).
    """
    starts = segment_starts(feature)
    n = np.diff(np.append(starts, len(feature)))
    feats = feature[starts]
    seg = np.repeat(np.arange(len(starts)), n)
    v64 = value.astype(np.float64)
    vmax = np.maximum.reduceat(value, starts) if len(starts) else np.zeros(0, np.float32)
    mean = np.add.reduceat(v64, starts) / n if len(starts) else np.zeros(0)
    # distinct contexts: rows are context-sorted within a feature
    new_ctx = np.ones(len(feature), dtype=bool)
    if len(feature) > 1:
        new_ctx[1:] = (feature[1:] != feature[:-1]) | (context[1:] != context[:-1])
    n_ctx = np.add.reduceat(new_ctx.astype(np.int64), starts) if len(starts) else np.zeros(0, np.int64)
    # argmax: first row of each segment that equals the segment max
    hit = np.flatnonzero(value == vmax[seg])
    first = hit[segment_starts(seg[hit])]
    # deciles: sort values within each feature via a composite key
    key = (seg.astype(np.uint64) << np.uint64(32)) | orderable_u32(value).astype(np.uint64)
    order = np.argsort(key, kind="stable")
    sv = v64[order]
    qs = np.empty((len(starts), len(DECILES)), dtype=np.float32)
    for j, q in enumerate(DECILES):
        pos = starts + q * (n - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, starts + n - 1)
        frac = pos - lo
        qs[:, j] = sv[lo] + (sv[hi] - sv[lo]) * frac
    return {"feature": feats, "n_firing": n, "n_contexts": n_ctx, "max_value": vmax,
            "mean_value": mean, "quantile_edges": qs, "max_context": context[first],
            "max_position": position[first]}
