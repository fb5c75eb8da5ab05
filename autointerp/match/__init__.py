"""Pair the features of two dictionaries over one corpus (a retrained SAE and the one before it): by the
co-activation of their activations, and by the cosine of their output directions when both have them.
What `label --carry-from` carries labels along and `diff --dictionaries` compares by."""

from .run import METHODS, MatchConfig, MatchResult, match_dictionaries

__all__ = ["METHODS", "MatchConfig", "MatchResult", "match_dictionaries"]
