"""Prices in US dollars per million tokens: input, output, cache read, cache write.

The defaults are list prices of model families as the project last checked them; pass `prices` (or
`--prices FILE.json` on the command line) to override or extend them. Matching is by the longest
prefix of the model name. A model with no price is *unpriced*: its calls are marked so in the ledger
(`cost` shows them as unpriced, never as $0), and a dollars budget cannot hold over it. `Usage.input_tokens` counts
uncached input only (cache reads and writes are counted apart), for every provider.
"""

from __future__ import annotations

from ..errors import AutointerpError
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


def _price(provider: str, model: str, prices: dict | None) -> tuple[float, float, float, float] | None:
    table = dict(prices or {}) if provider.startswith("compat") else {**DEFAULT_PRICES, **(prices or {})}
    match = max((p for p in table if model.startswith(p)), key=len, default=None)
    return None if match is None else table[match]


def is_priced(spec: str, prices: dict | None = None) -> bool:
    """Whether `provider:model` (anthropic:, openai:, compat:) has a price, from `prices` or the defaults.
    A self-hosted, OpenAI-compatible server (compat:) is priced only from `prices`."""
    kind, _, model = spec.partition(":")
    return _price(kind, model, prices) is not None


def price_of(provider: str, model: str, usage: Usage, prices: dict | None = None) -> float | None:
    """Dollars for one call; None when the model has no price. A self-hosted, OpenAI-compatible server is
    priced only from `prices`."""
    match = _price(provider, model, prices)
    if match is None:
        return None
    p_in, p_out, p_read, p_write = match
    return (usage.input_tokens * p_in + usage.output_tokens * p_out + usage.cache_read_tokens * p_read
            + usage.cache_write_tokens * p_write) / 1e6


def parse_prices(doc, where: str, error=AutointerpError) -> dict:
    """{model prefix: [input, output, cache read, cache write] $ per Mtok} -> {prefix: (4 floats)}, checked."""
    if not isinstance(doc, dict):
        raise error(f"{where} must map model prefixes to [input, output, cache read, cache write] $ per Mtok")
    out = {}
    for k, v in doc.items():
        if not (isinstance(v, list) and len(v) == 4 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                            and x >= 0 for x in v)):
            raise error(f"{where} {k!r} must be 4 non-negative numbers [input, output, cache read, cache write] "
                        f"$ per Mtok, not {v!r}")
        out[str(k)] = tuple(float(x) for x in v)
    return out

