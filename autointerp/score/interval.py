"""How sure a grade is: a 95% interval by a seeded, stratified bootstrap over the held-out windows.

Every grade is a function of per-window (or per-question) evidence: a similarity and a class for the
embedding AUROC, the tokens' true and predicted activations for a simulation's pooled correlation, a
right-or-wrong answer for detection, fuzzing and intruder questions. A bootstrap replicate draws each
stratum (activating windows, non-firing windows) again with replacement, at its own size, and
recomputes the grade; the interval is the 2.5th and 97.5th percentiles of `N_BOOT` replicates
(percentile bootstrap). Replicates are multinomial counts per window, so each grade is one or two
matrix products over all replicates, never a Python loop. The counts for a stratum of n windows are
rows of a pool of 4 x N_BOOT resamples of size n, drawn once per process from a fixed seed; each grade
picks its N_BOOT rows with its own generator (~0.3 ms a grade, against ~1.5 ms drawing fresh counts).

The generator is seeded by the sample's seed, the feature and the scorer's name: the same evidence
always gives the same interval. A replicate whose grade has no value (a resample of constant
predictions, say) is dropped; when more than a tenth are, the interval is None and the grade says so.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

N_BOOT = 1000
LEVEL = 0.95
POOL = 4  # resamples kept per stratum size, in units of n_boot


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def rng_for(seed: int, feature: int, scorer: str) -> np.random.Generator:
    """The bootstrap's generator for one grade: the same sample and scorer give the same interval."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(feature), zlib.crc32(scorer.encode())])


@lru_cache(maxsize=64)
def _pool(n: int, n_boot: int) -> np.ndarray:
    """POOL x n_boot resamples of n items, as draw counts (float32, each row sums to n), drawn once per
    size from a fixed seed: a grade picks its replicates among them (drawing fresh counts for every grade
    cost more than the grade itself)."""
    rng = np.random.default_rng([0xB007, n])
    rows = POOL * n_boot
    idx = rng.integers(0, n, size=(rows, n)) + np.arange(rows)[:, None] * n
    out = np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float32)
    out.flags.writeable = False
    return out


def counts(n: int, rng: np.random.Generator, n_boot: int = N_BOOT) -> np.ndarray:
    """[n_boot, n] draw counts of n items resampled n times with replacement (each row sums to n): rows of
    the size's pool, chosen by `rng`."""
    if n == 0:
        return np.zeros((n_boot, 0), np.float32)
    pool = _pool(n, n_boot)
    return pool[rng.integers(0, len(pool), size=n_boot)]


def percentile(replicates: np.ndarray, level: float = LEVEL) -> Interval | None:
    """The central `level` interval of the replicates' defined values; None when more than a tenth have none."""
    ok = replicates[np.isfinite(replicates)]
    if len(ok) < 0.9 * len(replicates) or len(ok) == 0:
        return None
    lo, hi = np.percentile(ok, [50 * (1 - level), 50 * (1 + level)])
    return Interval(round(float(lo), 6), round(float(hi), 6))


def auroc(scores: np.ndarray, labels: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT) -> Interval | None:
    """AUROC of `scores` separating labels 1 from 0, positives and negatives resampled apart."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return None
    wins = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).astype(np.float32)  # [P, N]
    wp, wn = counts(len(pos), rng, n_boot), counts(len(neg), rng, n_boot)
    return percentile(((wp @ wins) * wn).sum(1, dtype=np.float64) / (len(pos) * len(neg)))


def window_moments(true: list[np.ndarray], pred: list[np.ndarray]) -> np.ndarray:
    """[windows, 6]: each window's n, Σt, Σp, Σt², Σp², Σtp (what a pooled correlation is made of)."""
    lens = np.fromiter((len(t) for t in true), np.int64, len(true))
    if not len(lens) or not lens.all():
        return np.array([[len(t), np.sum(t), np.sum(p), np.dot(t, t), np.dot(p, p), np.dot(t, p)]
                         for t, p in zip(true, pred)], dtype=np.float64).reshape(len(true), 6)
    t, p = np.concatenate(true).astype(np.float64), np.concatenate(pred).astype(np.float64)
    starts = np.cumsum(lens) - lens
    cols = np.stack([t, p, t * t, p * p, t * p], axis=1)
    return np.column_stack([lens, np.add.reduceat(cols, starts, axis=0)])


def pooled_correlation(moments: np.ndarray, strata: np.ndarray, rng: np.random.Generator,
                       n_boot: int = N_BOOT) -> Interval | None:
    """Pearson correlation pooled over every token of the resampled windows (each stratum of windows,
    e.g. activating and non-firing, resampled apart)."""
    w = np.zeros((n_boot, len(moments)))
    for k in np.unique(strata):
        idx = np.flatnonzero(strata == k)
        w[:, idx] = counts(len(idx), rng, n_boot)
    n, st, sp, stt, spp, stp = (w @ moments).T
    with np.errstate(invalid="ignore", divide="ignore"):
        vt, vp = n * stt - st * st, n * spp - sp * sp
        r = (n * stp - st * sp) / np.sqrt(vt * vp)
    r[(vt <= 1e-12 * np.maximum(n * stt, 1e-300)) | (vp <= 1e-12 * np.maximum(n * spp, 1e-300))] = np.nan
    return percentile(np.clip(r, -1.0, 1.0))


def balanced_accuracy(correct: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                      n_boot: int = N_BOOT) -> Interval | None:
    """Mean of the recalls of the two classes, each class's windows resampled apart."""
    c, y = np.asarray(correct, np.float64), np.asarray(labels).astype(bool)
    if not y.any() or y.all():
        return None
    rec = [counts(int(m.sum()), rng, n_boot) @ c[m] / m.sum() for m in (y, ~y)]
    return percentile((rec[0] + rec[1]) / 2)


def accuracy(correct: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT) -> Interval | None:
    """The share of right answers, the questions resampled."""
    c = np.asarray(correct, np.float64)
    if not len(c):
        return None
    return percentile(counts(len(c), rng, n_boot) @ c / len(c))
