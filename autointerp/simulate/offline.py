"""The offline simulator: predicts each token's activation from an explanation, with no model calls.

The label is read for what it states precisely (reading.py: the words it quotes, the word after or before
something, words inside quotation marks, the last word of a sentence, a passage about a topic, ...). Each
token's prediction is the strongest of the patterns the label names, plus a small share (SIMILARITY) of
the cosine similarity of the token's in-context MiniLM vector to the label's embedding, which orders what
the patterns leave tied. A label in which nothing precise is
found is predicted from that similarity alone, plus 1 on the tokens its content words name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..contracts import SimulatorBase
from ..embed import ENCODING, ContextEncoder, embed_many, embed_text
from ..reading import join, predict_words, read_label, terms
from ..records import Window
from .llm import Predictions

SIMILARITY = 0.1  # the similarity's share where the label names a pattern


class OfflineSimulator(SimulatorBase):
    name = "offline"
    version = f"{ENCODING}/patterns+similarity-v3"

    def __init__(self, encoder: ContextEncoder) -> None:
        self.encoder = encoder
        self._joined: tuple = (None, None)  # (windows, reading.join(windows)): every label of a feature reads them

    def prepare(self, texts: Sequence[str]) -> None:
        """Embed the labels of a batch of features at once (before their predictions are asked for)."""
        embed_many(list(texts))

    def predict(self, explanation: str, windows: list[Window]) -> Predictions:
        if not windows:
            return Predictions([], {"simulator": "offline"})
        vecs, norms, _ = self.encoder.gather(windows)
        e = vecs.new_tensor(embed_text(explanation))
        sim = ((vecs @ e) / norms.clamp(min=1e-12)).clamp(min=0.0).numpy().astype(np.float64)
        patterns = read_label(explanation)
        if patterns:
            if self._joined[0] is not windows:
                self._joined = (windows, join(windows))
            words, keep = self._joined[1]
            pred = SIMILARITY * sim + predict_words(patterns, words)[keep]
        else:
            pred = sim + self.encoder.matches(windows, terms(explanation))
        info = {"simulator": "offline", "patterns": len(patterns)}
        return Predictions(np.split(pred, np.cumsum([len(w.tokens) for w in windows])[:-1]), info)
