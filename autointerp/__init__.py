"""autointerp: label the features of a neural network and grade the labels.

The Python API (see workspace.py):

    import autointerp
    ws = autointerp.open("sae.duckdb")            # a Workspace: dictionaries(), features(), labels(), show(), search()
    autointerp.label(store, dictionary, autointerp.LabelRun(...))
    autointerp.capture(store, autointerp.CaptureConfig(...))
    # a model, an SAE and texts already in memory (a notebook's): no file needed
    autointerp.capture(store, autointerp.CaptureConfig(model=autointerp.HeldModel(net, tokenizer, "gpt2"),
                       corpus=autointerp.TextList(texts), saes=(autointerp.HeldSAE(sae.encode, 768, 24576, hook),)))

Names are loaded on first use: `import autointerp` stays cheap (the CLI starts without torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .capture import CaptureConfig, HeldModel, HeldSAE, TextList, capture
    from .pipeline import LabelRun, label
    from .records import Dictionary, Explanation, FeatureLabel, FeatureSample, SamplerConfig, Score
    from .store import Store
    from .workspace import Workspace, open

_NAMES = {
    "open": ".workspace", "Workspace": ".workspace",
    "Store": ".store",
    "label": ".pipeline", "LabelRun": ".pipeline",
    "capture": ".capture", "CaptureConfig": ".capture", "HeldModel": ".capture", "HeldSAE": ".capture",
    "TextList": ".capture",
    "Dictionary": ".records", "Explanation": ".records", "FeatureLabel": ".records", "FeatureSample": ".records",
    "SamplerConfig": ".records", "Score": ".records",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'autointerp' has no attribute {name!r}")
