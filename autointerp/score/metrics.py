"""Metrics shared by every scorer, offline and LLM. Each returns a float or raises `Undefined`.

A metric that has no value on its input (one class only, a constant series) raises `Undefined` with
the reason, so a score records a typed "undefined" result instead of NaN.
"""

from __future__ import annotations

import numpy as np


class Undefined(ValueError):
    """The metric has no value on this input; the message says why."""


def _arrays(*xs):
    arrs = [np.asarray(x, dtype=np.float64).ravel() for x in xs]
    if len({len(a) for a in arrs}) > 1:
        raise ValueError(f"inputs differ in length: {[len(a) for a in arrs]}")
    if len(arrs[0]) == 0:
        raise Undefined("no data")
    if not all(np.isfinite(a).all() for a in arrs):
        raise ValueError("inputs hold NaN or Inf")
    return arrs


def correlation(true, pred) -> float:
    """Pearson correlation of two series (OpenAI's ev_correlation_score when pooled over all tokens)."""
    t, p = _arrays(true, pred)
    if t.std() == 0 or p.std() == 0:
        raise Undefined("a constant series has no correlation" + (" (true activations)" if t.std() == 0 else
                                                                  " (predictions)"))
    return float(np.clip(np.corrcoef(t, p)[0, 1], -1.0, 1.0))


def correlations(true: list[np.ndarray], pred: list[np.ndarray]) -> list[float | None]:
    """Pearson correlation of each pair of series, rounded to 4 places; None where it is undefined (a
    constant series). Vectorised over series of equal length."""
    out: list[float | None] = [None] * len(true)
    by_len: dict[int, list[int]] = {}
    for i, t in enumerate(true):
        by_len.setdefault(len(t), []).append(i)
    for n, idx in by_len.items():
        if n == 0:
            continue
        t = np.stack([true[i] for i in idx]).astype(np.float64)
        p = np.stack([pred[i] for i in idx]).astype(np.float64)
        if not (np.isfinite(t).all() and np.isfinite(p).all()):
            raise ValueError("inputs hold NaN or Inf")
        t -= t.mean(1, keepdims=True)
        p -= p.mean(1, keepdims=True)
        st, sp = np.sqrt((t * t).sum(1)), np.sqrt((p * p).sum(1))
        ok = (st > 0) & (sp > 0)
        r = np.clip((t * p).sum(1) / np.where(ok, st * sp, 1.0), -1.0, 1.0)
        for j, i in enumerate(idx):
            out[i] = round(float(r[j]), 4) if ok[j] else None
    return out


def r_squared(true, pred) -> float:
    """OpenAI's rsquared_score: 1 - mean((t - p)^2) / mean(t^2)."""
    t, p = _arrays(true, pred)
    denom = float(np.mean(t * t))
    if denom == 0:
        raise Undefined("true activations are all zero")
    return 1.0 - float(np.mean((t - p) ** 2)) / denom


def _binary(labels, predicted):
    y, yhat = _arrays(labels, predicted)
    if not (np.isin(y, (0, 1)).all() and np.isin(yhat, (0, 1)).all()):
        raise ValueError("labels and predictions must be 0 or 1")
    return y.astype(bool), yhat.astype(bool)


def balanced_accuracy(labels, predicted) -> float:
    """Mean of recall on positives and recall on negatives."""
    y, yhat = _binary(labels, predicted)
    if y.all() or not y.any():
        raise Undefined("balanced accuracy needs both positive and negative examples")
    return float(((yhat & y).sum() / y.sum() + (~yhat & ~y).sum() / (~y).sum()) / 2)


def precision(labels, predicted) -> float:
    y, yhat = _binary(labels, predicted)
    if not yhat.any():
        raise Undefined("precision is undefined when nothing is predicted positive")
    return float((yhat & y).sum() / yhat.sum())


def recall(labels, predicted) -> float:
    y, yhat = _binary(labels, predicted)
    if not y.any():
        raise Undefined("recall is undefined without positive examples")
    return float((yhat & y).sum() / y.sum())


def f1(labels, predicted) -> float:
    y, yhat = _binary(labels, predicted)
    tp = int((yhat & y).sum())
    denom = 2 * tp + int((yhat & ~y).sum()) + int((~yhat & y).sum())
    if denom == 0:
        raise Undefined("F1 is undefined with no positives predicted or present")
    return 2 * tp / denom


def auroc(labels, scores) -> float:
    """Area under the ROC curve: the probability a random positive outscores a random negative (ties 1/2)."""
    y, s = _arrays(labels, scores)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        raise Undefined("AUROC needs both positive and negative examples")
    # Mann-Whitney U with average ranks for ties
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_s[1:] != sorted_s[:-1])))
    ends = np.append(starts[1:], len(s))
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[y == 1].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))
