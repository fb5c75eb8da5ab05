"""Live capture: run a local Hugging Face model over a text corpus and store a dictionary's activations.

The model, a forward hook on one module, and optionally an SAE produce per-token features; only
the nonzero ones are kept. Everything happens in one store transaction and streams batch by
batch, so memory is bounded by `batch_size` whatever the corpus size, and any failure leaves
the store exactly as it was.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ..progress import Progress

from ..errors import CaptureError
from ..ingest.tokens import TokenStrings
from ..store import Store
from .corpus import check_corpus_path, file_sha256, pack_contexts, read_corpus
from .lens import logit_lens, output_directions, unembedding
from .model import load_model, model_label, resolve_hook, run_hooked, tokenizer_identity
from .sae import SAE, load_sae

NEIGHBOR_BLOCK = 4096


def corpus_fingerprint(tokenizer, model_path: Path, corpus: Path, ctx_len: int, max_tokens: int | None) -> str:
    """Equal fingerprints mean equal packed contexts, so a second capture reuses them."""
    parts = ["capture-v1", tokenizer_identity(tokenizer, model_path), file_sha256(corpus), str(ctx_len),
             str(max_tokens)]
    return "capture:" + hashlib.sha256("|".join(parts).encode()).hexdigest()


def _batches(contexts, batch_size: int):
    batch: list[list[int]] = []
    for c in contexts:
        batch.append(c)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True)
class CaptureConfig:
    """One capture: the local `model`, the `corpus` file, the module `hook`, and either an `sae` folder
    (SAELens layout) or `neurons`; the dictionary's name (default: model/hook/kind), `ctx_len` tokens a
    context, at most `max_tokens` tokens, values above `threshold` kept, `batch_size` contexts a forward
    pass, `neighbors` decoder-cosine neighbours per latent (SAEs only), `replace` an existing dictionary;
    `outputs`: store the features' output directions and, on a causal LM, their logit-lens tokens
    (capture/lens.py). Checked when made (CaptureError)."""

    model: str | Path
    corpus: str | Path
    hook: str
    sae: str | Path | None = None
    neurons: bool = False
    dictionary: str | None = None
    ctx_len: int = 64
    max_tokens: int | None = None
    threshold: float = 0.0
    batch_size: int = 16
    neighbors: int = 0
    replace: bool = False
    outputs: bool = True

    def __post_init__(self) -> None:
        _check_args(self.sae, self.neurons, self.ctx_len, self.max_tokens, self.threshold, self.batch_size,
                    self.neighbors)


def _check_args(sae, neurons, ctx_len, max_tokens, threshold, batch_size, neighbors) -> None:
    if (sae is None) == (not neurons):
        raise CaptureError("pass exactly one of an SAE folder (--sae) or --neurons"
                           + (", not both" if neurons else ""))
    if ctx_len < 2:
        raise CaptureError(f"ctx_len must be >= 2, got {ctx_len}")
    if max_tokens is not None and max_tokens < 1:
        raise CaptureError(f"max_tokens must be >= 1, got {max_tokens}")
    if batch_size < 1:
        raise CaptureError(f"batch_size must be >= 1, got {batch_size}")
    if not np.isfinite(threshold):
        raise CaptureError(f"threshold must be a finite number, got {threshold}")
    if neighbors < 0:
        raise CaptureError(f"neighbors must be >= 0, got {neighbors}")
    if neighbors and neurons:
        raise CaptureError("neighbors need an SAE's decoder directions; they are not available with --neurons")


def capture(store: Store, config: CaptureConfig, progress: bool = False) -> dict:
    """Capture one dictionary (SAE latents or raw neurons at `config.hook`) over a corpus into the store.

    Values above `threshold` are stored (SAE latents are >= 0, so the default keeps every nonzero
    latent). Positions holding special tokens ([CLS], [SEP], the document separator) are never
    recorded: they carry no text to explain and often have outsized activations. Contexts are
    reused when the same tokenizer, corpus file, ctx_len and max_tokens were captured before.
    """
    c = config
    sae, hook, dictionary, ctx_len, max_tokens = c.sae, c.hook, c.dictionary, c.ctx_len, c.max_tokens
    threshold, batch_size, replace, neighbors = c.threshold, c.batch_size, c.replace, c.neighbors
    corpus_path = check_corpus_path(c.corpus).resolve()
    enc: SAE | None = load_sae(sae) if sae is not None else None
    model_path = Path(c.model).resolve()
    net, tokenizer = load_model(model_path, quiet=True)
    point = resolve_hook(net, hook)
    max_pos = getattr(net.config, "max_position_embeddings", None)
    if isinstance(max_pos, int) and ctx_len > max_pos:
        raise CaptureError(f"ctx_len {ctx_len} exceeds the model's {max_pos} positions")
    kind = "sae" if enc is not None else "neurons"
    name = dictionary or f"{model_label(model_path)}/{hook}/{kind}"
    if not replace and any(d.name == name for d in store.dictionaries()):
        raise CaptureError(f"dictionary {name!r} already exists in {store.path}; pass --replace to overwrite it")
    strings = TokenStrings(tokenizer, str(model_path))
    special = np.array(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
    fp = corpus_fingerprint(tokenizer, model_path, corpus_path, ctx_len, max_tokens)
    config: dict = {"threshold": threshold, "ctx_len": ctx_len, "max_tokens": max_tokens,
                    "corpus": str(corpus_path)}
    if enc is not None:
        config["sae_cfg"] = enc.cfg

    contexts = pack_contexts(tokenizer, read_corpus(corpus_path), ctx_len, max_tokens, source=str(corpus_path))
    n_ctx = nonzeros = 0
    with Progress(max_tokens, f"capture {name}", "tok", progress, unit_scale=True) as bar, \
            store.writer() as w:
        cid, created = w.add_corpus(name=corpus_path.stem, tokenizer=str(model_path), ctx_len=ctx_len,
                                    fingerprint=fp, source=str(corpus_path))
        expected = None if created else store.corpus(cid).n_contexts
        b = None
        with torch.no_grad():
            for batch in _batches(contexts, batch_size):
                ids = np.asarray(batch, dtype=np.int64)
                x = run_hooked(net, point, torch.from_numpy(ids))
                if b is None:  # first batch: the width is known now
                    if enc is not None and x.shape[-1] != enc.d_in:
                        raise CaptureError(f"SAE d_in {enc.d_in} does not match hook {hook} output width "
                                           f"{x.shape[-1]}")
                    width = enc.d_sae if enc is not None else int(x.shape[-1])
                    b = w.add_dictionary(name=name, corpus_id=cid, model=str(model_path), hook=hook, width=width,
                                         kind=kind, source=str(Path(sae).resolve() if sae is not None else model_path),
                                         config=config, replace=replace, sorted_input=False)
                acts = enc.encode(x) if enc is not None else x
                keep = acts > threshold
                keep &= torch.from_numpy(~np.isin(ids, special))[..., None]
                where = torch.nonzero(keep).numpy()
                values = acts[keep].numpy()
                if created:
                    w.add_contexts(cid, list(ids), strings(ids))
                elif expected is not None and n_ctx + len(batch) > expected:
                    raise CaptureError(f"corpus {cid} in the store holds {expected} contexts but "
                                       f"{corpus_path} now packs into more")
                b.append(where[:, 2], where[:, 0] + n_ctx, where[:, 1], values)
                n_ctx += len(batch)
                nonzeros += len(values)
                bar.update(ids.size)
                del x, acts, keep, where, values
        if expected is not None and n_ctx != expected:
            raise CaptureError(f"corpus {cid} in the store holds {expected} contexts but {corpus_path} "
                               f"packs into {n_ctx}")
        nonzeros = b.finish()
        if neighbors and enc is not None:
            _add_neighbors(w, b.dictionary_id, enc.W_dec, neighbors)
        outputs = _add_outputs(w, b.dictionary_id, net, point, enc, strings, progress) if c.outputs else {}
    return {"dictionary": name, "corpus_id": cid, "corpus_created": created, "contexts": n_ctx,
            "ctx_len": ctx_len, "tokens": n_ctx * ctx_len, "width": b.width, "nonzeros": nonzeros, "kind": kind,
            "hook": hook, "model": str(model_path), **outputs}


def decoder_neighbors(W_dec: torch.Tensor, k: int, block: int = NEIGHBOR_BLOCK):
    """Yield (feature, neighbor, similarity) arrays: each latent's top-k others by decoder cosine.

    Blocked so only a [block, d_sae] similarity matrix is held at a time.
    """
    W = torch.nn.functional.normalize(W_dec.to(torch.float32), dim=1)
    n = W.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        sim = W[lo:hi] @ W.T
        sim[torch.arange(hi - lo), torch.arange(lo, hi)] = -float("inf")
        top = torch.topk(sim, k, dim=1)
        feature = np.repeat(np.arange(lo, hi), k)
        yield feature, top.indices.reshape(-1).numpy(), top.values.reshape(-1).numpy()


def _add_outputs(w, dictionary_id: int, net, point, enc: SAE | None, strings: TokenStrings, progress: bool) -> dict:
    """Store the dictionary's output directions and, when they live in the hidden space of a model with an
    unembedding, each feature's logit-lens tokens. Returns what was stored, for the capture summary."""
    directions = output_directions(net, point, enc)
    if directions is None:
        return {"directions": None, "output_tokens": 0}
    w.add_directions(dictionary_id, directions.vectors.numpy())
    unembed = unembedding(net) if directions.hidden else None
    if unembed is None:
        return {"directions": directions.source, "output_tokens": 0}
    if unembed.vocab > len(strings.table):
        raise CaptureError(f"the model's unembedding has {unembed.vocab} tokens but its tokenizer "
                           f"{len(strings.table)}")
    n = len(directions.vectors)
    with Progress(n, "logit lens", "feat", progress) as bar:
        for feats, up, up_v, down, down_v in logit_lens(unembed, directions.vectors):
            w.add_output_tokens(dictionary_id, feats, strings.table, (up, up_v), (down, down_v))
            bar.update(len(feats))
    return {"directions": directions.source, "output_tokens": n}


def _add_neighbors(w, dictionary_id: int, W_dec: torch.Tensor, k: int) -> None:
    with torch.no_grad():
        for feature, neighbor, sim in decoder_neighbors(W_dec, k):
            w.add_neighbors(dictionary_id, feature, neighbor, sim)
