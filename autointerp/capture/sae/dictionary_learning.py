"""dictionary_learning (saprmarks/dictionary_learning): a folder holding `ae.pt`, the dictionary's state dict
(torch.save of module.state_dict(); read with torch.load(weights_only=True)), and `config.json`, whose
`trainer.dict_class` names the class (dictionary_learning/training.py writes {"trainer": trainer.config,
"buffer": ...}; utils.load_dictionary reads it). D = activation_dim, F = dict_size; nn.Linear weights are
[out, in], so the decoder's columns are the output directions (W_dec = decoder.weight.T).

  AutoEncoder (dictionary.py)          bias [D], encoder.weight [F, D], encoder.bias [F], decoder.weight [D, F]
                                       relu(encoder(x - bias))
  AutoEncoderNew (dictionary.py)       encoder.weight, encoder.bias, decoder.weight, decoder.bias [D]
                                       relu(encoder(x))
  GatedAutoEncoder (dictionary.py)     decoder_bias [D], encoder.weight [F, D] (no bias), r_mag, gate_bias,
                                       mag_bias [F], decoder.weight [D, F];  e = encoder(x - decoder_bias):
                                       (e + gate_bias > 0) * relu(exp(r_mag) * e + mag_bias)
  AutoEncoderTopK (trainers/top_k.py)  encoder.weight, encoder.bias, decoder.weight, b_dec [D], k and
                                       threshold (scalar buffers); the top k of relu(encoder(x - b_dec))
                                       (its default encode: the threshold is not used)
  BatchTopKSAE (trainers/batch_top_k.py)  the same tensors; relu(encoder(x - b_dec)), kept where above the
                                       scalar threshold (its default encode at inference)
  MatryoshkaBatchTopKSAE (trainers/matryoshka_batch_top_k.py)  W_enc [D, F], b_enc, W_dec [F, D], b_dec,
                                       k, threshold, group_sizes; as BatchTopKSAE
  JumpReluAutoEncoder (dictionary.py)  W_enc [D, F], b_enc, W_dec [F, D], b_dec, threshold [F];
                                       relu(pre * (pre > threshold)), pre = x @ W_enc + b_enc (its
                                       apply_b_dec_to_input is False, and not saved)

Weights are read as saved, with no renormalisation: AutoEncoder.from_pretrained by default rescales the
decoder's columns to unit norm and the encoder to match, which multiplies each latent's activations by its
decoder column's norm; we do not, so our activations are the saved model's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from ...errors import CaptureError
from .encoder import SAE, Spec
from .files import (check_shapes, fingerprint, first_line, located, matrix_dims, read_json, require, scalar,
                    summary_cfg)

AE, CONFIG = "ae.pt", "config.json"
D, F = "activation_dim", "dict_size"
LINEAR = {"encoder.weight": (F, D), "encoder.bias": (F,), "decoder.weight": (D, F)}
PARAMS = {"W_enc": (D, F), "b_enc": (F,), "W_dec": (F, D), "b_dec": (D,)}


class Layout(NamedTuple):
    architecture: str
    tensors: dict[str, tuple[str, ...]]  # state-dict key -> its axes
    scalars: tuple[str, ...] = ()  # scalar buffers it must hold
    b_in: str | None = None  # the bias subtracted from the input
    b_dec: str = "b_dec"  # the decoder's bias


CLASSES = {
    "AutoEncoder": Layout("standard", {"bias": (D,), **LINEAR}, b_in="bias", b_dec="bias"),
    "AutoEncoderNew": Layout("standard", {**LINEAR, "decoder.bias": (D,)}, b_dec="decoder.bias"),
    "GatedAutoEncoder": Layout("gated", {"decoder_bias": (D,), "encoder.weight": (F, D), "r_mag": (F,),
                                         "gate_bias": (F,), "mag_bias": (F,), "decoder.weight": (D, F)},
                               b_in="decoder_bias", b_dec="decoder_bias"),
    "AutoEncoderTopK": Layout("topk", {**LINEAR, "b_dec": (D,)}, ("k",), b_in="b_dec"),
    "BatchTopKSAE": Layout("batchtopk", {**LINEAR, "b_dec": (D,)}, ("threshold",), b_in="b_dec"),
    "MatryoshkaBatchTopKSAE": Layout("batchtopk", PARAMS, ("threshold",), b_in="b_dec"),
    "JumpReluAutoEncoder": Layout("jumprelu", {**PARAMS, "threshold": (F,)}),
}


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an unpickling error, a truncated zip, a non-tensor object
        raise CaptureError(f"{path}: not a readable torch state dict ({first_line(e)})") from None
    if isinstance(state, dict) and {"ae", "optimizer"} <= state.keys():
        raise CaptureError(f"{path}: a training backup (step {state.get('step')}), not a finished dictionary: "
                           "finish the training run, or use one of its checkpoints/ae_*.pt")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CaptureError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def _dims(config_path: Path, trainer: dict, w: dict, layout: dict) -> tuple[dict[str, int], str | None]:
    """activation_dim and dict_size: from config.json when it gives them, else from the first matrix."""
    first = next(n for n, axes in layout.items() if len(axes) == 2)
    dims = dict(zip(layout[first], matrix_dims(config_path.parent / AE, w[first], first, layout[first])))
    given = {n: trainer[n] for n in (D, F) if n in trainer}
    for n, v in given.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise CaptureError(f"{config_path}: trainer.{n} must be an integer >= 1, got {v!r}")
    return dims | given, ("config.json says " + ", ".join(f"{n}={v}" for n, v in given.items())) if given else None


def _k(config_path: Path, ae_path: Path, trainer: dict, w: dict) -> int | None:
    """k from the state dict's buffer and config.json's trainer.k, which must agree."""
    k_file = int(scalar(ae_path, w, "k")) if "k" in w else None
    k_cfg = trainer.get("k")
    if k_cfg is not None and (isinstance(k_cfg, bool) or not isinstance(k_cfg, int) or k_cfg < 1):
        raise CaptureError(f"{config_path}: trainer.k must be an integer >= 1, got {k_cfg!r}")
    if k_file is not None and k_cfg is not None and k_file != k_cfg:
        raise CaptureError(f"{ae_path}: k is {k_file} but {config_path.name} says trainer.k={k_cfg}")
    return k_file if k_file is not None else k_cfg


def load(folder: Path, *, dtype: torch.dtype = torch.float32, device=None) -> SAE:
    """The dictionary_learning dictionary in `folder` (ae.pt + config.json)."""
    config_path, ae_path = folder / CONFIG, folder / AE
    config = read_json(config_path)
    trainer = config.get("trainer")
    if not isinstance(trainer, dict):
        trainer = {}
    dict_class = trainer.get("dict_class")
    if dict_class not in CLASSES:
        found = f"{dict_class!r}" if dict_class is not None else "none"
        raise CaptureError(f"{config_path}: trainer.dict_class is {found}, expected one of {', '.join(CLASSES)}")
    layout = CLASSES[dict_class]
    arch = layout.architecture
    w = _state_dict(ae_path)
    require(ae_path, w, list(layout.tensors) + list(layout.scalars))
    dims, says = _dims(config_path, trainer, w, layout.tensors)
    check_shapes(ae_path, w, layout.tensors, dims, says)
    k = _k(config_path, ae_path, trainer, w) if arch in ("topk", "batchtopk") else None
    if arch == "topk" and (k is None or not 1 <= k <= dims[F]):
        raise CaptureError(f"{ae_path}: k must be in 1..{dims[F]} (dict_size), got {k}")
    t = dict(w)
    b_enc = t.get("b_enc")
    if "encoder.weight" in t:  # nn.Linear layouts
        t["W_enc"], b_enc, t["W_dec"] = t["encoder.weight"].T, t.get("encoder.bias"), t["decoder.weight"].T
    if arch == "batchtopk":  # one scalar threshold for every latent
        t["threshold"] = torch.full((dims[F],), scalar(ae_path, w, "threshold"), dtype=torch.float64)
        if "group_sizes" in w and int(w["group_sizes"].sum()) != dims[F]:
            raise CaptureError(f"{ae_path}: group_sizes sum to {int(w['group_sizes'].sum())}, "
                               f"expected dict_size = {dims[F]}")
    threshold = t["threshold"] if arch in ("jumprelu", "batchtopk") else None
    if threshold is not None and not torch.isfinite(threshold).all():
        raise CaptureError(f"{ae_path}: threshold holds a non-finite value")
    tensors = {"W_enc": t["W_enc"], "b_enc": b_enc, "W_dec": t["W_dec"], "b_dec": t[layout.b_dec],
               "b_in": t[layout.b_in] if layout.b_in else None, "threshold": threshold,
               "b_gate": t.get("gate_bias"), "b_mag": t.get("mag_bias"), "r_mag": t.get("r_mag")}
    hook = trainer.get("submodule_name")
    name, source = located(folder)
    spec = Spec(format="dictionary_learning", architecture=arch, name=name, source=source,
                fingerprint=fingerprint([config_path, ae_path]), k=k,
                hook_name=hook if isinstance(hook, str) and hook else None,
                cfg=summary_cfg(config, "dictionary_learning", arch, k, False))
    return SAE(tensors, spec, dtype=dtype, device=device)
