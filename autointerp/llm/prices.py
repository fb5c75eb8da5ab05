"""Prices in US dollars per million tokens: input, output, cache read, cache write.

The defaults are list prices of model families as the project last checked them; pass `prices` (or
`--prices FILE.json` on the command line) to override or extend them. Matching is by the longest
prefix of the model name. A model with no price costs 0 in the ledger. `Usage.input_tokens` counts
uncached input only (cache reads and writes are counted apart), for every provider.
"""

from __future__ import annotations

from .providers import Usage

DEFAULT_PRICES: dict[str, tuple[float, float, float, float]] = {
    "claude-haiku": (1.00, 5.00, 0.10, 1.25),
    "claude-sonnet": (3.00, 15.00, 0.30, 3.75),
    "claude-opus": (15.00, 75.00, 1.50, 18.75),
    "gpt-4o-mini": (0.15, 0.60, 0.075, 0.0),
    "gpt-4o": (2.50, 10.00, 1.25, 0.0),
    "gpt-4.1-mini": (0.40, 1.60, 0.10, 0.0),
    "gpt-4.1": (2.00, 8.00, 0.50, 0.0),
}


def price_of(provider: str, model: str, usage: Usage, prices: dict | None = None) -> float:
    """Dollars for one call. A self-hosted, OpenAI-compatible server is priced only from `prices`."""
    table = dict(prices or {}) if provider.startswith("compat@") else {**DEFAULT_PRICES, **(prices or {})}
    match = max((p for p in table if model.startswith(p)), key=len, default=None)
    if match is None:
        return 0.0
    p_in, p_out, p_read, p_write = table[match]
    return (usage.input_tokens * p_in + usage.output_tokens * p_out + usage.cache_read_tokens * p_read
            + usage.cache_write_tokens * p_write) / 1e6
