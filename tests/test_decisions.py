"""The pipeline's small decision functions, one rule at a time: whether a carried label is kept, which of k
candidate labels is chosen, how many windows each round of an adaptive grade judges, and what kind a
skip or failure reason is. The end-to-end tests (test_match.py's carry, test_explain_llm.py's best-of-k,
test_scores.py's adaptive budget) show them at work; these pin each rule's edges."""

import pytest

from autointerp.errors import UsageError
from autointerp.pipeline.config import CarryOptions
from autointerp.pipeline.summary import RunSummary
from autointerp.pipeline.work import _best, _carry_rejected
from autointerp.records import Failure, FeatureLabel, SamplerConfig, Score
from autointerp.score.base import AdaptiveBudget


def grade(value=None, status="ok", interval=None, reason=""):
    return Score("simulation", "v1", status, value, reason, interval=interval)


# -- carry: keep a matched dictionary's label unless its own grade says otherwise -----------------------------

def test_a_carried_label_without_a_usable_grade_is_kept_unless_the_grade_failed():
    carry = CarryOptions(source="old", min_score=0.5)
    assert _carry_rejected(None, 0.9, carry) is None  # no deciding scorer: nothing to compare
    assert _carry_rejected(grade(status="undefined", reason="too few windows"), 0.9, carry) is None
    assert _carry_rejected(grade(None), 0.9, carry) is None  # "ok" with no value (a plugin's): as undefined
    why = _carry_rejected(grade(status="failed", reason="reply: no JSON"), 0.9, carry)
    assert why == "its simulation grade failed (reply: no JSON)"


def test_a_carried_label_below_the_minimum_score_is_explained_anew():
    carry = CarryOptions(source="old", min_score=0.5)
    assert _carry_rejected(grade(0.49), None, carry) == "simulation 0.490 < 0.5"
    assert _carry_rejected(grade(0.5), None, carry) is None  # at the minimum: kept
    assert _carry_rejected(grade(-1.0), None, CarryOptions(source="old")) is None  # no minimum, no partner


def test_below_the_partner_counts_only_beyond_the_grades_own_noise():
    carry = CarryOptions(source="old", margin=0.1)
    # value alone: 0.69 is more than 0.1 below the partner's 0.8
    assert _carry_rejected(grade(0.69), 0.8, carry) == "simulation 0.690 < the partner's 0.800 - 0.1"
    assert _carry_rejected(grade(0.71), 0.8, carry) is None
    # with an interval, its top decides: a noisy low grade whose 95% reaches past partner - margin is kept
    assert _carry_rejected(grade(0.5, interval=(0.3, 0.75)), 0.8, carry) is None
    why = _carry_rejected(grade(0.5, interval=(0.3, 0.65)), 0.8, carry)
    assert why == "simulation 0.500 (95% up to 0.650) < the partner's 0.800 - 0.1"


def test_carry_options_refuse_values_no_grade_can_take():
    for bad in ({"margin": -0.1}, {"margin": float("nan")}, {"min_score": float("inf")}, {"min_score": float("nan")},
                {"min_similarity": 1.01}, {"method": "cosine"}):
        with pytest.raises(UsageError):
            CarryOptions(source="old", **bad)


# -- best-of-k: the candidate with the highest defined grade ---------------------------------------------------

def test_best_of_k_takes_the_highest_defined_grade_and_the_first_of_equals():
    assert _best([grade(0.2), grade(0.7), grade(0.5)]) == 1
    assert _best([grade(0.7), grade(0.7)]) == 0  # equals: the first drawn
    assert _best([grade(status="failed"), grade(-0.3), grade(status="undefined")]) == 1  # a defined one wins
    assert _best([grade(status="failed"), grade(None)]) == 0  # none defined: the first


# -- the adaptive window budget: rounds until the interval is narrow ------------------------------------------

@pytest.mark.parametrize("budget,n,ends", [
    (AdaptiveBudget(start=20, step=20), 100, [20, 40, 60, 80, 100]),
    (AdaptiveBudget(start=20, step=20), 50, [20, 40, 50]),  # the last round takes what is left
    (AdaptiveBudget(start=20, step=20), 10, [10]),  # fewer windows than the first round: one round of all
    (AdaptiveBudget(start=20, step=30, cap=60), 1000, [20, 50, 60]),  # the cap ends it
    (AdaptiveBudget(start=20, step=20, cap=40), 40, [20, 40]),
])
def test_adaptive_rounds_grow_by_step_up_to_the_cap_or_the_windows(budget, n, ends):
    assert budget.ends(n) == ends


def test_an_adaptive_budget_refuses_what_a_sample_cannot_hold():
    for bad in ({"target": 0}, {"target": 1}, {"start": 1}, {"step": 0}, {"start": 30, "cap": 20},
                {"cap": 5000}):
        with pytest.raises(UsageError):
            AdaptiveBudget(**bad)


# -- failures: typed where they happen, counted by kind --------------------------------------------------------

def test_a_failure_is_its_kind_and_message_and_reads_back_from_its_stored_text():
    f = Failure("explainer", "reply: no JSON object")
    assert str(f) == "explainer: reply: no JSON object" and Failure.of_reason(str(f)) == f
    assert Failure.of_reason("too rare: 3 activating windows") == Failure("too rare", "3 activating windows")
    assert Failure.of_reason("") == Failure("unknown")
    # a record given a Failure keeps its text as the reason; one read back from the store gets its Failure
    made = Score("simulation", "v1", "failed", None, failure=Failure("provider", "budget spent"))
    assert made.reason == "provider: budget spent"
    read = Score("simulation", "v1", "failed", None, "reply: no JSON")
    assert read.failure == Failure("reply", "no JSON")
    assert Score("simulation", "v1", "undefined", None, "too few windows").failure is None  # not a failure
    assert Score("simulation", "v1", "ok", 0.5).failure is None


def test_a_summary_counts_failures_by_their_kind():
    base = dict(dictionary="d", explainer="offline", prompt_hash="p", sampler=SamplerConfig(), seed=0)
    summary = RunSummary()
    summary.count(FeatureLabel(feature=1, status="skipped", failure=Failure("dead", "never fires"), **base))
    summary.count(FeatureLabel(feature=2, status="failed", failure=Failure("explainer", "reply: empty"), **base))
    summary.count(FeatureLabel(feature=3, status="failed", failure=Failure("explainer", "reply: prose"), **base))
    assert summary.skipped_kinds == {"dead": 1} and summary.failed_kinds == {"explainer": 2}
    assert summary.failure_reasons == {"explainer: reply: empty": 1, "explainer: reply: prose": 1}
