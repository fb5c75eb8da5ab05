"""Vectorised helpers on sorted sparse activation arrays, shared by the store and the sampler.

Sorting is the cost that decides ingest and sampling speed, so rows are ordered through packed
uint64 keys: numpy sorts one uint64 array an order of magnitude faster than `lexsort` on three.
"""

from __future__ import annotations

import numpy as np

DECILES = tuple(round(0.1 * i, 1) for i in range(1, 10))
_U64 = np.uint64


def orderable_u32(values: np.ndarray) -> np.ndarray:
    """Map float32 values to uint32 keys with the same order (negatives and -0.0 included)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    flip = (bits.view(np.int32) >> 31).view(np.uint32)  # all ones for negatives, else zero
    flip |= np.uint32(0x80000000)
    return bits ^ flip


def from_orderable_u32(keys: np.ndarray) -> np.ndarray:
    """Inverse of `orderable_u32`."""
    keys = keys.astype(np.uint32, copy=False)
    sign = (~keys).view(np.int32) >> 31  # all ones where the sign bit of the key is clear (negatives)
    flip = sign.view(np.uint32) | np.uint32(0x80000000)
    return (keys ^ flip).view(np.float32)


def segment_starts(keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted 1-D array."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))


def argsort_keys(key: np.ndarray, *tiebreak: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
    """Indices sorting `key` ascending, equal keys ordered by the `tiebreak` arrays (first most significant).

    `index`, if given, maps positions of `key` to rows of the tiebreak arrays (so they need not be
    gathered up front: ties are rare). The result is a function of the values alone, never of the
    unstable sort's internals, so a subset of the rows sorts the same way alone as inside a bigger array.
    """
    order = np.argsort(key)
    if len(order) < 2:
        return order
    ks = key[order]
    tie = ks[1:] == ks[:-1]
    if tie.any():
        run = np.zeros(len(ks), dtype=bool)
        run[1:] |= tie
        run[:-1] |= tie
        at = np.flatnonzero(run)
        sub = order[at]
        rows = sub if index is None else index[sub]
        order[at] = sub[np.lexsort(tuple(t[rows] for t in reversed(tiebreak)) + (ks[at],))]
    return order


def _cell_key(feature, context, position):
    """(feature, context, position) packed into one unsigned key (uint32 when it fits, else uint64)
    with the same order, relative to the first row's feature; None when the ranges do not fit 64 bits."""
    if len(feature) == 0:
        return np.zeros(0, _U64)
    f0 = int(feature[0])
    f_span = int(feature.max()) - f0
    c_bits = max(int(context.max()), 1).bit_length()
    p_bits = max(int(position.max()), 1).bit_length()
    bits = max(f_span, 1).bit_length() + c_bits + p_bits
    if int(feature.min()) < f0 or bits > 64:
        return None
    t = np.uint32 if bits <= 32 else _U64
    f = feature.astype(t) - t(f0)
    return (f << t(c_bits + p_bits)) | (context.astype(t) << t(p_bits)) | position.astype(t)


def is_sorted_rows(feature: np.ndarray, context: np.ndarray, position: np.ndarray) -> bool:
    """True when rows are in (feature, context, position) order, strictly (no duplicate cells)."""
    if len(feature) < 2:
        return True
    key = _cell_key(feature, context, position)
    if key is not None:
        return bool((key[1:] > key[:-1]).all())
    f = feature.astype(np.int64)
    df = np.diff(f)
    cp = (context.astype(_U64) << _U64(16)) | position.astype(_U64)
    return bool(((df > 0) | ((df == 0) & (cp[1:] > cp[:-1]))).all())


def sort_rows(feature, context, position, value):
    """Sort rows by (feature, context, position); returns the four arrays reordered."""
    key = _cell_key(feature, context, position)
    order = np.lexsort((position, context, feature)) if key is None else np.argsort(key, kind="stable")
    return feature[order], context[order], position[order], value[order]


def feature_stats(feature: np.ndarray, context: np.ndarray, position: np.ndarray,
                  value: np.ndarray) -> dict[str, np.ndarray]:
    """Per-feature statistics of rows sorted by (feature, context, position), one entry per feature present.

    Quantile edges are the deciles of each feature's firing values, linear interpolation between
    order statistics (the same definition as numpy's default and DuckDB's quantile_cont).
    """
    starts = segment_starts(feature)
    if len(starts) == 0:
        z = np.zeros(0)
        return {"feature": feature[:0], "n_firing": z.astype(np.int64), "n_contexts": z.astype(np.int64),
                "max_value": z.astype(np.float32), "mean_value": z, "quantile_edges": np.zeros((0, len(DECILES)),
                np.float32), "max_context": context[:0], "max_position": position[:0]}
    n = np.diff(np.append(starts, len(feature)))
    feats = feature[starts]
    value = value.astype(np.float32, copy=False)
    mean = np.add.reduceat(value, starts, dtype=np.float64) / n
    # distinct contexts: rows are context-sorted within a feature
    new_ctx = np.empty(len(feature), dtype=bool)
    new_ctx[0] = True
    np.not_equal(context[1:], context[:-1], out=new_ctx[1:])
    new_ctx[starts] = True
    n_ctx = np.add.reduceat(new_ctx, starts, dtype=np.int64)
    # one sort of (segment, value) packed keys gives the max, the deciles and the argmax
    seg = np.repeat(np.arange(len(starts), dtype=_U64), n)
    ov = orderable_u32(value)
    sk = (np.sort((seg << _U64(32)) | ov) & _U64(0xFFFFFFFF)).astype(np.uint32)
    sv = from_orderable_u32(sk).astype(np.float64)
    last = starts + n - 1
    vmax = sv[last].astype(np.float32)
    # argmax: the first row of each segment holding the maximum
    is_max = ov == np.repeat(sk[last], n)
    hit = np.flatnonzero(is_max)
    first = hit[segment_starts(seg[hit])]
    qs = np.empty((len(starts), len(DECILES)), dtype=np.float32)
    for j, q in enumerate(DECILES):
        pos = starts + q * (n - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, last)
        frac = pos - lo
        qs[:, j] = sv[lo] + (sv[hi] - sv[lo]) * frac
    return {"feature": feats, "n_firing": n, "n_contexts": n_ctx, "max_value": vmax,
            "mean_value": mean, "quantile_edges": qs, "max_context": context[first],
            "max_position": position[first]}
