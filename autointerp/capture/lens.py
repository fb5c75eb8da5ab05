"""What a feature writes, and which tokens that promotes: output directions and the logit lens.

A feature's *output direction* is the vector it adds to the model when it fires: for an SAE latent its
decoder row (W_dec[i]); for a neuron recorded at the input of a linear layer (the MLP neurons of a
Llama-style block, `...mlp.down_proj:input`) the layer's weight column for it, W[:, i]. Neurons read off
a module's output have no known direction, and none is stored.

When the direction lives in the model's hidden space and the model has an unembedding (a causal LM's
`lm_head`), the *logit lens* reads it as tokens: the direction through the final norm and the unembedding,
lm_head(norm(d)), gives one logit per vocabulary token; the highest are the tokens the feature promotes,
the lowest those it suppresses (as SAEDashboard and Neuronpedia show them, `pos_str` / `neg_str`). The
norm makes the scale of d irrelevant, so features compare. It ignores what happens between the feature
and the end of the model (later layers, and for MLP neurons the block's own post-MLP norm, if any).

Cost: one [vocab, d] matrix product per feature (Gemma 3 270M: 262,144 x 640, ~0.3 GFLOP), in blocks of
`BLOCK` features; only a [BLOCK, vocab] block of logits is held at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .model import HookPoint
from .sae import SAE

if TYPE_CHECKING:
    from .held import HeldSAE

TOP = 10  # promoted and suppressed tokens kept per feature
BLOCK = 64
FINAL_NORMS = ("model.norm", "model.final_norm", "transformer.ln_f", "model.final_layernorm",
               "gpt_neox.final_layer_norm", "model.decoder.final_layer_norm", "backbone.norm_f")


@dataclass(frozen=True)
class Directions:
    """Every feature's output direction, rows of `vectors` [width, dim]; `source` says what they are, and
    `hidden` whether they live in the model's hidden space (so the logit lens applies)."""

    vectors: torch.Tensor
    source: str
    hidden: bool


def hidden_size(model: torch.nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    size = getattr(cfg, "hidden_size", None)
    return size if isinstance(size, int) else None


def output_directions(model: torch.nn.Module, point: HookPoint, sae: SAE | HeldSAE | None) -> Directions | None:
    """The dictionary's output directions, or None when it has none (neurons read off a module's output)."""
    d_model = hidden_size(model)
    if sae is not None:
        if sae.W_dec is None:  # a held SAE given without its decoder
            return None
        return Directions(sae.W_dec.detach().float().cpu(), "sae decoder rows (W_dec)",
                          sae.W_dec.shape[1] == d_model)
    if point.on_input and isinstance(point.module, torch.nn.Linear):
        W = point.module.weight.detach().float().cpu()  # [out, in]: neuron i writes column i
        return Directions(W.T.contiguous(), f"{point.name}.weight columns", W.shape[0] == d_model)
    return None


@dataclass(frozen=True)
class Unembedding:
    """The model's final norm (None if it has none found) and its unembedding (a [vocab, dim] linear map)."""

    norm: torch.nn.Module | None
    head: torch.nn.Module
    vocab: int


def unembedding(model: torch.nn.Module) -> Unembedding | None:
    """A causal LM's final norm and lm_head, or None for a model without an unembedding (an encoder)."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    weight = getattr(head, "weight", None)
    if head is None or weight is None or weight.ndim != 2:
        return None
    modules = dict(model.named_modules())
    norm = next((modules[n] for n in FINAL_NORMS if n in modules), None)
    return Unembedding(norm, head, int(weight.shape[0]))


@torch.no_grad()
def logit_lens(unembed: Unembedding, vectors: torch.Tensor, k: int = TOP,
               block: int = BLOCK) -> Iterator[tuple[np.ndarray, ...]]:
    """Yield (features, promoted ids [n, k], their logits, suppressed ids [n, k], their logits) per block of
    features, promoted in falling and suppressed in rising order of logit."""
    k = min(k, unembed.vocab)
    weight = unembed.head.weight  # the head's device and dtype: blocks go where the model is
    assert isinstance(weight, torch.Tensor)  # a linear map's [vocab, dim] weight (see unembedding)
    for lo in range(0, len(vectors), block):
        x = vectors[lo:lo + block].to(device=weight.device, dtype=weight.dtype)
        if unembed.norm is not None:
            x = unembed.norm(x)
        logits = unembed.head(x).float()
        up = torch.topk(logits, k, dim=1)
        down = torch.topk(logits, k, dim=1, largest=False)
        yield (np.arange(lo, lo + len(x)), up.indices.cpu().numpy(), up.values.cpu().numpy(),
               down.indices.cpu().numpy(), down.values.cpu().numpy())
