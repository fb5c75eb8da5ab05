"""Counter-based randomness and window keys for the vectorised sampler.

Draws are a keyed hash (splitmix64) of (seed, feature, ...) rather than a stream from one RNG, so a
feature's sample depends only on the seed and the feature's own data: sampling one feature alone or
16k at once, in any chunking, gives the same windows, and the code stays vectorised over features.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += _GOLD
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
        x ^= x >> np.uint64(31)
    return x


def keyed(seed: int, *parts) -> np.ndarray:
    """A uniform uint64 per element, a deterministic function of the seed and the parts (broadcast)."""
    h = _mix(np.asarray(np.uint64(seed % 2**64)))
    for part in parts:
        h = _mix(h ^ np.asarray(part).astype(np.uint64))
    return h


FEATURE_BITS, CONTEXT_BITS, POSITION_BITS = 20, 27, 17  # 17: a window end may equal 65536
MAX_CHUNK_FEATURES = 2**FEATURE_BITS
MAX_CONTEXTS = 2**CONTEXT_BITS


def cell_key(feature_idx: np.ndarray, context: np.ndarray, position: np.ndarray) -> np.ndarray:
    """One sortable uint64 per (chunk-local feature index, context, position)."""
    return ((np.asarray(feature_idx).astype(np.uint64) << np.uint64(CONTEXT_BITS + POSITION_BITS))
            | (np.asarray(context).astype(np.uint64) << np.uint64(POSITION_BITS))
            | np.asarray(position).astype(np.uint64))


_BASE = 0x9E3779B97F4A7C15 | 1  # odd, so invertible modulo 2**64
_POW: np.ndarray | None = None  # _BASE ** j
_INV_POW: np.ndarray | None = None  # _BASE ** -j


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    global _POW, _INV_POW
    if _POW is None or _INV_POW is None or len(_POW) < n:  # made together
        n = max(n, 1024)
        one = np.ones(1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            _POW = np.concatenate([one, np.cumprod(np.full(n - 1, _BASE, dtype=np.uint64))])
            _INV_POW = np.concatenate([one, np.cumprod(np.full(n - 1, pow(_BASE, -1, 2**64), dtype=np.uint64))])
    return _POW, _INV_POW


def window_hashes(toks: dict, context: np.ndarray, start: np.ndarray, width: np.ndarray) -> np.ndarray:
    """64-bit hash of the token ids of each window (context, start, width), for content de-duplication.

    toks: `Store.read_contexts` output covering every context named. A polynomial hash with prefix
    sums over each context, so each window costs O(1) after one pass over the contexts' tokens.
    """
    ids, offsets = toks["token_ids"], toks["offsets"]
    lens = np.diff(offsets)
    pos = np.arange(len(ids), dtype=np.int64) - np.repeat(offsets[:-1], lens)
    pw, inv = _powers(int(lens.max(initial=0)) + 1)
    prefix = np.zeros(len(ids) + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        np.cumsum((ids.astype(np.int64) + 2).astype(np.uint64) * pw[pos], out=prefix[1:])
        a = offsets[np.searchsorted(toks["context_id"], context)] + start
        h = (prefix[a + width] - prefix[a]) * inv[start]
    return _mix(h ^ np.asarray(width).astype(np.uint64))
