"""pipeline: features -> samples -> explanations -> scores for one dictionary, resumable, per scorer.

`label(store, dictionary, LabelRun(...))` runs it and returns a `RunSummary`; `score_text` grades any
text as a feature's label. The CLI (`autointerp label`) and job files (`autointerp job run`) both build
a `LabelRun`.
"""

from .config import MIN_EVIDENCE, BatchOptions, Budget, CarryOptions, LabelRun, parse_features, parse_ranges
from .plan import WorkPlan, build, ensure_match, plan
from .run import Parts, clients_of, grade_one, label, score_text
from .summary import RunSummary

__all__ = ["MIN_EVIDENCE", "BatchOptions", "Budget", "CarryOptions", "LabelRun", "Parts", "RunSummary", "WorkPlan", "build",
           "clients_of", "ensure_match", "grade_one", "label", "parse_features", "parse_ranges", "plan", "score_text"]
