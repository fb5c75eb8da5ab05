"""The offline simulator: predicts each token's activation from an explanation, on all-MiniLM-L6-v2.

prediction = 1 where the token is a word the explanation names (`terms`: its quoted strings, else its
content words), plus the cosine similarity of the token's in-context MiniLM vector to the explanation's
embedding, floored at 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..contracts import SimulatorBase
from ..records import Window
from ..embed import ENCODING, ContextEncoder, embed_many, embed_text
from .llm import Predictions

_STOP = set("a an the of in on at to for and or is are be as by with from that this it its token tokens such "
            "fires fire firing after before often like text words word".split())


def terms(explanation: str) -> set[str]:
    """The words an explanation names: its quoted strings if it has any, else its content words."""
    quoted = re.findall(r'"([^"]+)"', explanation)
    words = quoted or [w for w in re.findall(r"\w+", explanation) if w.lower() not in _STOP]
    return {w.strip().lower() for w in words if w.strip()}


class OfflineSimulator(SimulatorBase):
    name = "offline"
    version = f"{ENCODING}/match+similarity-v2"

    def __init__(self, encoder: ContextEncoder) -> None:
        self.encoder = encoder

    def prepare(self, texts: Sequence[str]) -> None:
        """Embed the labels of a batch of features at once (before their predictions are asked for)."""
        embed_many(list(texts))

    def predict(self, explanation: str, windows: list[Window]) -> Predictions:
        if not windows:
            return Predictions([], {"simulator": "offline"})
        vecs, norms, _ = self.encoder.gather(windows)
        e = vecs.new_tensor(embed_text(explanation))
        sim = ((vecs @ e) / norms.clamp(min=1e-12)).clamp(min=0.0).numpy().astype(np.float64)
        pred = sim + self.encoder.matches(windows, terms(explanation))
        return Predictions(np.split(pred, np.cumsum([len(w.tokens) for w in windows])[:-1]), {"simulator": "offline"})
