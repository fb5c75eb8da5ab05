"""simulate: from an explanation alone, predict a feature's activation on every token of its held-out windows.

A simulator has `name`, `version` and `predict(explanation, windows) -> Predictions` (plain, or `async`
for an LLM): one array of predicted activations per window, on the simulator's own scale. The
simulation scorer (score/simulation.py) grades the predictions against the true activations.

- `OfflineSimulator` (offline.py): named-token matches plus in-context MiniLM similarity; no model calls.
- `JSONSimulator` (llm.py, prompts/simulate_json.toml): the model writes a number 0-10 for every token;
  where the provider gives top_logprobs, each number becomes the expected value over "0".."10".
- `SparseSimulator` (llm.py, prompts/simulate_sparse.toml): the model lists only the tokens it predicts
  non-zero, [window, index, token, value 1-10]; everything else is 0. A few times fewer output tokens.
"""

from __future__ import annotations

from .llm import (
    JSONSimulator,
    Predictions,
    SparseSimulator,
    check_simulator,
    make_llm_simulator,
    parse_simulation,
    parse_sparse,
)
from .offline import OfflineSimulator

__all__ = ["JSONSimulator", "OfflineSimulator", "Predictions", "SparseSimulator", "check_simulator", "make_llm_simulator",
           "parse_simulation", "parse_sparse"]
