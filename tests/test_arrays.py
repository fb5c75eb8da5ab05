"""The packed-key helpers the store and the sampler sort with, against plain numpy definitions."""

import numpy as np
import pytest

from autointerp import arrays as A
from autointerp.sample.keys import window_hashes


def test_orderable_keys_round_trip_and_keep_float_order():
    x = np.float32([0.0, -0.0, np.inf, -np.inf, 1e-40, -1e-40, 1.0, -1.0, 3.5, -2.25, 65504.0])
    k = A.orderable_u32(x)
    assert np.array_equal(A.from_orderable_u32(k).view(np.uint32), x.view(np.uint32))
    ordered = x[np.argsort(k, kind="stable")]
    assert (np.diff(ordered[np.isfinite(ordered)]) >= 0).all()
    assert ordered[0] == -np.inf and ordered[-1] == np.inf


def _rows(rng, n, feature_max, context_max, position_max):
    f = rng.integers(0, feature_max, n)
    c = rng.integers(0, context_max, n)
    p = rng.integers(0, position_max, n)
    _, keep = np.unique(np.stack([f, c, p]), axis=1, return_index=True)
    f, c, p = f[keep], c[keep], p[keep]
    o = np.lexsort((p, c, f))
    return f[o], c[o], p[o]


@pytest.mark.parametrize("feature_max", [50, 2**20, 2**50])  # packed in uint32, in uint64, not packable
def test_sorted_rows_check_and_sort_on_every_key_width(feature_max):
    rng = np.random.default_rng(feature_max % 97)
    f, c, p = _rows(rng, 5000, feature_max, 300, 64)
    f = f.astype(np.uint64 if feature_max > 2**32 else np.uint32)
    assert A.is_sorted_rows(f, c, p)
    dup = np.insert(np.arange(len(f)), 100, 99)  # one cell twice
    assert not A.is_sorted_rows(f[dup], c[dup], p[dup])
    swap = np.arange(len(f))
    swap[[10, 11]] = swap[[11, 10]]
    assert not A.is_sorted_rows(f[swap], c[swap], p[swap])
    perm = rng.permutation(len(f))
    v = rng.random(len(f))
    got = A.sort_rows(f[perm], c[perm], p[perm], v[perm])
    for a, b in zip(got, (f, c, p, v)):
        assert np.array_equal(a, b)


def test_feature_stats_match_numpy():
    rng = np.random.default_rng(1)
    f, c, p = _rows(rng, 20000, 60, 300, 64)
    v = np.round(rng.normal(size=len(f)), 1).astype(np.float32)  # many ties, negatives
    s = A.feature_stats(f, c, p, v)
    assert s["feature"].tolist() == sorted(set(f.tolist()))
    for i, feat in enumerate(s["feature"]):
        m = f == feat
        vals = v[m]
        assert s["n_firing"][i] == m.sum()
        assert s["n_contexts"][i] == len(np.unique(c[m]))
        assert s["max_value"][i] == vals.max()
        assert s["mean_value"][i] == pytest.approx(vals.astype(np.float64).mean())
        assert np.allclose(s["quantile_edges"][i], np.quantile(vals.astype(np.float64), A.DECILES))
        first_max = np.flatnonzero(m)[np.argmax(vals)]
        assert (s["max_context"][i], s["max_position"][i]) == (c[first_max], p[first_max])


def test_argsort_keys_breaks_ties_by_value_not_by_position():
    rng = np.random.default_rng(2)
    key = rng.integers(0, 6, 3000).astype(np.uint64)
    t1, t2 = rng.integers(0, 3, 3000), rng.permutation(3000)
    order = A.argsort_keys(key, t1, t2)
    assert np.array_equal(order, np.lexsort((t2, t1, key)))
    # the same rows in another arrangement sort to the same sequence of rows
    perm = rng.permutation(3000)
    order2 = A.argsort_keys(key[perm], t1[perm], t2[perm])
    assert np.array_equal(perm[order2], order)
    # tiebreaks looked up through an index
    idx = rng.permutation(3000)
    assert np.array_equal(A.argsort_keys(key, t1[np.argsort(idx)], t2[np.argsort(idx)], index=idx),
                          np.lexsort((t2, t1, key)))


def test_window_hashes_see_content_not_place():
    toks = {"context_id": np.array([3, 7]), "offsets": np.array([0, 10, 20]),
            "token_ids": np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 9, 9, 3, 4, 5, 6, 1, 1, 1, 1], np.int32)}
    h = window_hashes(toks, np.array([3, 7, 3, 7, 3, 7]), np.array([2, 2, 2, 2, 0, 7]), np.array([4, 4, 3, 3, 4, 3]))
    assert h[0] == h[1] and h[2] == h[3]  # same tokens in two contexts
    assert len({h[0], h[2], h[4], h[5]}) == 4  # different tokens or lengths
