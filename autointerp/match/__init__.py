"""Two dictionaries, or two runs, side by side. `run.py` pairs the features of two dictionaries over one
corpus (a retrained SAE and the one before it): by the co-activation of their activations, and by the
cosine of their output directions when both have them; `label --carry-from` carries labels along the
pairs. `diff.py` reports what changed between two runs or two dictionaries: features added and gone,
labels that changed meaning, grades that moved beyond their intervals."""

from .diff import KINDS, DiffConfig, DiffResult, Side, diff, run_side
from .run import METHODS, MatchConfig, MatchResult, check_pair, match_dictionaries

__all__ = ["KINDS", "METHODS", "DiffConfig", "DiffResult", "MatchConfig", "MatchResult", "Side", "check_pair", "diff",
           "match_dictionaries", "run_side"]
