"""Third-party explainers, scorers, simulators and LLM providers, registered through entry points (as
simonw/llm's plugins are). A package declares, in its pyproject.toml:

    [project.entry-points."autointerp.explainers"]
    keywords = "my_package:make_explainer"      # --explainer keywords
    [project.entry-points."autointerp.scorers"]
    length = "my_package:make_scorer"           # --scorer length
    [project.entry-points."autointerp.simulators"]
    mine = "my_package:make_simulator"          # --simulator mine (with a --scorer-model)
    [project.entry-points."autointerp.providers"]
    myapi = "my_package:make_provider"          # anthropic:..., openai:..., and now myapi:MODEL

Each entry point is a factory. Explainer and scorer factories take a `PluginContext` (the store, the
dictionary, the run's LLM options and scoring options) and return a part (contracts.py says what a part
is); a simulator factory takes the context and the LLMClient of the scorer model; a provider factory takes
the model name and the keyword arguments `base_url`, `api_key_env`, `timeout`. Once installed, a plugin's
names are accepted wherever the built-in ones are, listed by `autointerp plugins`, and recorded in every
label's provenance as its own (a plugin explainer's `name` and `prompt_hash`).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .errors import LabelError

GROUPS = {"explainer": "autointerp.explainers", "scorer": "autointerp.scorers",
          "simulator": "autointerp.simulators", "provider": "autointerp.providers"}


@dataclass(frozen=True)
class PluginContext:
    """What a plugin's factory is given to make its part."""

    store: Any  # the Store (its repositories: store.activations, store.labels, ...)
    dictionary: Any  # the Dictionary being labelled
    llm: Any = None  # the run's LLMOptions (run id, limits, cache), for a part that calls an LLM
    scoring: Any = None  # the run's ScoringOptions
    scorer_model: str | None = None


def registered(kind: str) -> dict[str, EntryPoint]:
    """The entry points of one kind of part, by name (the first of a name wins; names are case-sensitive)."""
    out: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUPS[kind]):
        out.setdefault(ep.name, ep)
    return out


def factory(kind: str, name: str):
    """The factory a plugin registered for `name`, or None. A plugin that cannot be imported is one line."""
    ep = registered(kind).get(name)
    if ep is None:
        return None
    try:
        return ep.load()
    except Exception as e:  # noqa: BLE001 - someone else's package: whatever it raises, say which
        raise LabelError(f"{kind} plugin {name!r} ({ep.value}) cannot be loaded: {type(e).__name__}: {e}") from None


def make(kind: str, name: str, *args, **kwargs):
    """A part from the plugin registered as `name`, checked against its contract; None when no plugin has
    that name. What the factory raises is one line naming the plugin."""
    from .contracts import adopt

    make_part = factory(kind, name)
    if make_part is None:
        return None
    try:
        part = make_part(*args, **kwargs)
    except LabelError:
        raise
    except Exception as e:  # noqa: BLE001
        raise LabelError(f"{kind} plugin {name!r} failed to start: {type(e).__name__}: {e}") from None
    return adopt(part, kind)


def describe() -> list[dict]:
    """Every registered plugin part: kind, name, where it points, and the package that provides it."""
    rows = []
    for kind in GROUPS:
        for name, ep in sorted(registered(kind).items()):
            dist = ep.dist
            rows.append({"kind": kind, "name": name, "value": ep.value,
                         "package": dist.metadata["Name"] if dist else None, "version": dist.version if dist else None})
    return rows
