"""SAELens (jbloomAus/SAELens, now decoderesearch/SAELens): a folder holding `cfg.json` and
`sae_weights.safetensors`.

Tensors (sae_lens/saes/*.py): W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in];
jumprelu adds `threshold` [d_sae]; gated has no b_enc but `b_gate`, `b_mag`, `r_mag` [d_sae]; a batchtopk
training checkpoint holds a scalar `topk_threshold` (SAELens saves the inference model as jumprelu with
threshold = topk_threshold everywhere; we apply it the same way); transcoders (`transcoder`,
`skip_transcoder`, `jumprelu_transcoder`) have W_dec [d_sae, d_out], b_dec [d_out], never subtract b_dec from
their input, and skip_transcoder adds W_skip [d_out, d_in] (not used to encode).

cfg.json, both styles: v6 (`architecture`, `k` at top level, the hook in `metadata.hook_name`, a transcoder's
output hook in `metadata.hook_name_out`) and v5 (`activation_fn_str` relu/topk with
`activation_fn_kwargs.k`, `hook_name` at top level; older still `hook_point`, and `normalize_activations` as
a bool). `apply_b_dec_to_input` (default true; false for transcoders) subtracts b_dec first;
`normalize_activations` none / constant_norm_rescale / layer_norm is applied as SAELens does
(expected_average_only_in needs a scaling factor the files do not hold: refused); topk and batchtopk
`rescale_acts_by_decoder_norm` multiplies pre-activations by the decoder rows' norms (default false for an
inference topk cfg, true for a batchtopk training cfg, as SAELens's config classes say).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ...errors import CaptureError
from .encoder import NORMALIZATIONS, SAE, Spec
from .files import (check_shapes, fingerprint, flag, located, matrix_dims, positive_int, read_json, read_safetensors,
                    require, scalar, summary_cfg)

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
# the file's architecture -> how it encodes
ENCODE = {"standard": "standard", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated",
          "batchtopk": "batchtopk", "matryoshka_batchtopk": "batchtopk",
          "transcoder": "standard", "skip_transcoder": "standard", "jumprelu_transcoder": "jumprelu"}
TRANSCODERS = ("transcoder", "skip_transcoder", "jumprelu_transcoder")


def _text(path: Path, cfg: dict, key: str) -> str | None:
    value = cfg.get(key)
    if value is not None and not isinstance(value, str):
        raise CaptureError(f"{path}: {key} must be a string, got {value!r}")
    return value or None


def _architecture(path: Path, cfg: dict) -> tuple[str, str, int | float | None]:
    """(the file's architecture, how it encodes, k) from either cfg style."""
    arch = (_text(path, cfg, "architecture") or "standard").lower()
    act = (_text(path, cfg, "activation_fn_str") or _text(path, cfg, "activation_fn") or "").lower()
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise CaptureError(f"{path}: activation_fn_kwargs must be an object, got {kwargs!r}")
    if act not in ("", "relu", "topk"):
        raise CaptureError(f"{path}: SAE activation function {act!r} is not supported (supported: relu, topk)")
    if arch == "standard" and act == "topk":  # v5: topk was an activation function of a standard SAE
        arch = "topk"
    if arch not in ENCODE:
        raise CaptureError(f"{path}: SAE architecture {arch!r} is not supported (supported: {', '.join(ENCODE)})")
    encode = ENCODE[arch]
    if encode == "topk":
        if cfg.get("k", kwargs.get("k")) is None:
            raise CaptureError(f"{path}: topk SAE cfg.json gives no k (expected 'k' or activation_fn_kwargs.k)")
        return arch, encode, positive_int(path, {"k": cfg.get("k", kwargs.get("k"))}, "k")
    if encode == "batchtopk":  # k is the training batch's mean L0 (a float in SAELens); kept for reference
        k = cfg.get("k")
        return arch, encode, k if isinstance(k, (int, float)) and not isinstance(k, bool) else None
    return arch, encode, None


def _normalization(path: Path, cfg: dict) -> str:
    norm = cfg.get("normalize_activations")
    if norm is None or norm is False:
        return "none"
    if norm is True:  # before v6 a bool: true meant expected_average_only_in
        norm = "expected_average_only_in"
    if norm not in NORMALIZATIONS:
        raise CaptureError(f"{path}: SAE normalize_activations {norm!r} is not supported "
                           f"(supported: {', '.join(NORMALIZATIONS)})")
    return norm


def load(folder: Path, *, dtype: torch.dtype = torch.float32, device=None) -> SAE:
    """The SAELens SAE in `folder` (cfg.json + sae_weights.safetensors)."""
    cfg_path, w_path = folder / CFG, folder / WEIGHTS
    cfg = read_json(cfg_path)
    file_arch, arch, k = _architecture(cfg_path, cfg)
    norm = _normalization(cfg_path, cfg)
    reshape = cfg.get("reshape_activations") or "none"
    if reshape != "none":
        raise CaptureError(f"{cfg_path}: SAE reshape_activations {reshape!r} is not supported "
                           "(capture gives one flat vector a token)")
    transcoder = file_arch in TRANSCODERS
    apply_b_dec = flag(cfg_path, cfg, "apply_b_dec_to_input", not transcoder)
    if transcoder and apply_b_dec:
        raise CaptureError(f"{cfg_path}: apply_b_dec_to_input must be false for a transcoder "
                           "(its b_dec lives at the output hook)")
    w = read_safetensors(w_path)
    if arch == "jumprelu" and "threshold" not in w and "log_threshold" in w:  # a JumpReLU training checkpoint
        w["threshold"] = w.pop("log_threshold").double().exp()
    require(w_path, w, ["W_enc", "W_dec", "b_dec"] + (["b_gate", "b_mag", "r_mag"] if arch == "gated" else ["b_enc"])
            + (["threshold"] if arch == "jumprelu" or (arch == "batchtopk" and "topk_threshold" not in w) else []))
    enc_in, enc_sae = matrix_dims(w_path, w["W_enc"], "W_enc", ("d_in", "d_sae"))
    d_in, d_sae = positive_int(cfg_path, cfg, "d_in", enc_in), positive_int(cfg_path, cfg, "d_sae", enc_sae)
    out = "d_out" if transcoder else "d_in"
    dims = {"d_in": d_in, "d_sae": d_sae}
    says = f"cfg.json says d_in={d_in}, d_sae={d_sae}"
    if transcoder:
        dims["d_out"] = positive_int(cfg_path, cfg, "d_out", w["W_dec"].shape[-1] if w["W_dec"].ndim else d_in)
        says += f", d_out={dims['d_out']}"
    if arch == "topk" and k is not None and k > d_sae:
        raise CaptureError(f"{cfg_path}: k must be in 1..{d_sae} (d_sae), got {k}")
    if arch == "batchtopk" and "threshold" not in w:  # one threshold for every latent, as SAELens saves it
        w["threshold"] = torch.full((d_sae,), scalar(w_path, w, "topk_threshold"), dtype=torch.float64)
    check_shapes(w_path, w, {"W_enc": ("d_in", "d_sae"), "b_enc": ("d_sae",), "W_dec": ("d_sae", out),
                             "b_dec": (out,), "threshold": ("d_sae",), "b_gate": ("d_sae",), "b_mag": ("d_sae",),
                             "r_mag": ("d_sae",), "W_skip": (out, "d_in")}, dims, says)
    if arch in ("jumprelu", "batchtopk") and not torch.isfinite(w["threshold"]).all():
        raise CaptureError(f"{w_path}: threshold holds a non-finite value")
    meta = cfg.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    hook = _text(cfg_path, cfg, "hook_name") or _text(cfg_path, meta, "hook_name") or _text(cfg_path, cfg, "hook_point")
    out_hook = (_text(cfg_path, cfg, "hook_name_out") or _text(cfg_path, meta, "hook_name_out")) if transcoder else None
    rescale = arch in ("topk", "batchtopk") and flag(cfg_path, cfg, "rescale_acts_by_decoder_norm",
                                                     arch == "batchtopk")
    tensors = {"W_enc": w["W_enc"], "b_enc": w.get("b_enc"), "W_dec": w["W_dec"], "b_dec": w["b_dec"],
               "b_in": w["b_dec"] if apply_b_dec else None,
               "threshold": w["threshold"] if arch in ("jumprelu", "batchtopk") else None,
               "b_gate": w.get("b_gate"), "b_mag": w.get("b_mag"), "r_mag": w.get("r_mag")}
    if isinstance(k, float) and math.isfinite(k) and k.is_integer():
        k = int(k)
    name, source = located(folder)
    spec = Spec(format="saelens", architecture=arch, name=name, source=source,
                fingerprint=fingerprint([cfg_path, w_path]), k=k, normalize_activations=norm,
                rescale_acts_by_decoder_norm=rescale, transcoder=transcoder, hook_name=hook, out_hook=out_hook,
                cfg=summary_cfg(cfg, "saelens", arch, k, transcoder))
    return SAE(tensors, spec, dtype=dtype, device=device)
