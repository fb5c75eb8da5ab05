"""Metric functions against values worked out by hand."""

import pytest

from autointerp.score import metrics as M


def test_correlation_by_hand():
    # t = 1,2,3 ; p = 1,3,2 : mean 2 and 2; cov = (-1*-1 + 0*1 + 1*0)/3 = 1/3; var = 2/3 each -> r = 0.5
    assert M.correlation([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert M.correlation([0, 0, 5, 0], [0, 0, 10, 0]) == pytest.approx(1.0)
    assert M.correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(M.Undefined, match="true activations"):
        M.correlation([0, 0, 0], [1, 2, 3])
    with pytest.raises(M.Undefined, match="predictions"):
        M.correlation([1, 2, 3], [4, 4, 4])


def test_r_squared_openai_definition():
    # 1 - mean((t-p)^2)/mean(t^2): t = 0,2 ; p = 0,1 -> 1 - (0 + 1)/2 / ((0 + 4)/2) = 1 - 0.5/2 = 0.75
    assert M.r_squared([0, 2], [0, 1]) == pytest.approx(0.75)
    with pytest.raises(M.Undefined):
        M.r_squared([0, 0], [1, 0])


def test_classification_by_hand():
    y = [1, 1, 1, 0, 0]
    yhat = [1, 0, 1, 1, 0]
    # tp 2, fn 1, fp 1, tn 1: recall 2/3, specificity 1/2, precision 2/3, F1 = 4/(4+1+1)
    assert M.recall(y, yhat) == pytest.approx(2 / 3)
    assert M.precision(y, yhat) == pytest.approx(2 / 3)
    assert M.balanced_accuracy(y, yhat) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert M.f1(y, yhat) == pytest.approx(4 / 6)
    with pytest.raises(M.Undefined, match="both positive and negative"):
        M.balanced_accuracy([1, 1], [1, 0])
    with pytest.raises(M.Undefined):
        M.precision([1, 0], [0, 0])
    with pytest.raises(ValueError, match="0 or 1"):
        M.f1([2, 0], [1, 0])


def test_auroc_by_hand_with_ties():
    # positives 0.9, 0.4 ; negatives 0.4, 0.1: pairs (0.9>0.4, 0.9>0.1, 0.4=0.4 -> 1/2, 0.4>0.1) = 3.5/4
    assert M.auroc([1, 1, 0, 0], [0.9, 0.4, 0.4, 0.1]) == pytest.approx(0.875)
    assert M.auroc([1, 0], [0.2, 0.8]) == 0.0
    assert M.auroc([1, 1, 0], [5, 5, 5]) == pytest.approx(0.5)
    with pytest.raises(M.Undefined, match="both positive and negative"):
        M.auroc([1, 1], [0.3, 0.2])


def test_bad_inputs_are_errors_not_values():
    with pytest.raises(ValueError, match="differ in length"):
        M.correlation([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        M.auroc([1, 0], [float("nan"), 1])
    with pytest.raises(M.Undefined, match="no data"):
        M.correlation([], [])
