"""EleutherAI sparsify (delphi's own SAEs): a folder per hookpoint, named as the hookpoint, holding `cfg.json`
and `sae.safetensors` (sparsify/sparse_coder.py, save_to_disk / load_from_disk; sparsify/config.py).

cfg.json is SparseCoderConfig.to_dict() plus `d_in`: `activation` (topk, or groupmax), `expansion_factor`,
`num_latents` (0: d_in * expansion_factor), `k`, `normalize_decoder`, `multi_topk`, `skip_connection`,
`transcode`; fields a file lacks take sparsify's defaults (topk, k 32). sae.safetensors holds the module's
state dict: `encoder.weight` [num_latents, d_in] and `encoder.bias` [num_latents] (an nn.Linear),
`W_dec` [num_latents, d_in] (decoder rows: the output directions, for transcoders too: sparsify's transcoders
write as wide as they read), `b_dec` [d_in], and `W_skip` [d_in, d_in] with skip_connection (not used to
encode).

encode: relu(encoder(x - b_dec)) then the top k (sparsify/fused_encoder.py); transcoders (`transcode`)
skip the b_dec subtraction. A transcoder reads its hookpoint module's input and writes its output, so both
`hook_name` and `out_hook` are the hookpoint. `load_many` (and our load_saes) takes every hookpoint folder
of a run folder, in natural order of name.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...errors import CaptureError
from .encoder import SAE, Spec
from .files import (check_shapes, fingerprint, flag, located, matrix_dims, natural_key, positive_int, read_json,
                    read_safetensors, require, summary_cfg)

CFG, WEIGHTS = "cfg.json", "sae.safetensors"
ACTIVATIONS = ("topk", "groupmax")


def is_hookpoint(folder: Path) -> bool:
    return (folder / CFG).is_file() and (folder / WEIGHTS).is_file()


def hookpoints(folder: Path) -> list[Path]:
    """The hookpoint folders directly inside `folder` (a sparsify run or repository)."""
    subs = [p for p in folder.iterdir() if p.is_dir() and is_hookpoint(p)] if folder.is_dir() else []
    return sorted(subs, key=lambda p: natural_key(p.name))


def load(folder: Path, *, dtype: torch.dtype = torch.float32, device=None) -> SAE:
    """The sparsify sparse coder in hookpoint folder `folder`."""
    cfg_path, w_path = folder / CFG, folder / WEIGHTS
    cfg = read_json(cfg_path)
    d_in = positive_int(cfg_path, cfg, "d_in")
    activation = cfg.get("activation", "topk")
    if activation not in ACTIVATIONS:
        raise CaptureError(f"{cfg_path}: activation {activation!r} is not supported (supported: "
                           f"{', '.join(ACTIVATIONS)})")
    if flag(cfg_path, cfg, "signed", False):  # mid-2024 sae versions: top k by |value|, signed latents
        raise CaptureError(f"{cfg_path}: signed sparse coders are not supported (their latents go negative)")
    k = positive_int(cfg_path, cfg, "k", 32)
    num_latents = positive_int(cfg_path, cfg, "num_latents", 0, minimum=0)
    transcode = flag(cfg_path, cfg, "transcode", False)
    w = read_safetensors(w_path)
    require(w_path, w, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"])
    latents, _ = matrix_dims(w_path, w["encoder.weight"], "encoder.weight", ("num_latents", "d_in"))
    if num_latents == 0:  # the tensors decide, as sparsify builds the module from d_in * expansion_factor
        num_latents = latents
    check_shapes(w_path, w, {"encoder.weight": ("num_latents", "d_in"), "encoder.bias": ("num_latents",),
                             "W_dec": ("num_latents", "d_in"), "b_dec": ("d_in",), "W_skip": ("d_in", "d_in")},
                 {"num_latents": num_latents, "d_in": d_in})
    if not 1 <= k <= num_latents:
        raise CaptureError(f"{cfg_path}: k must be in 1..{num_latents} (num_latents), got {k}")
    if activation == "groupmax" and num_latents % k:
        raise CaptureError(f"{cfg_path}: groupmax needs k ({k}) to divide num_latents ({num_latents})")
    tensors = {"W_enc": w["encoder.weight"].T, "b_enc": w["encoder.bias"], "W_dec": w["W_dec"],
               "b_dec": w["b_dec"], "b_in": None if transcode else w["b_dec"]}
    hookpoint, source = located(folder)
    spec = Spec(format="sparsify", architecture=activation, name=hookpoint, source=source,
                fingerprint=fingerprint([cfg_path, w_path]), k=k, transcoder=transcode, hook_name=hookpoint,
                out_hook=hookpoint if transcode else None,
                cfg=summary_cfg(cfg, "sparsify", activation, k, transcode))
    return SAE(tensors, spec, dtype=dtype, device=device)
