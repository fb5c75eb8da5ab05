"""Load a sparse autoencoder saved in the SAELens folder layout and encode activations with it.

A folder holds `cfg.json` and `sae_weights.safetensors` (W_enc [d_in, d_sae], b_enc [d_sae],
W_dec [d_sae, d_in], b_dec [d_in], and `threshold` [d_sae] for JumpReLU). Both cfg styles are
read: SAELens v6 (`architecture` standard/topk/jumprelu, `k` at top level, hook in `metadata`)
and v5 (`activation_fn_str` relu/topk with `activation_fn_kwargs.k`, `hook_name` at top level).
Only the encoder is needed to capture, so SAELens itself is not a dependency.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CaptureError

ARCHITECTURES = ("standard", "topk", "jumprelu")
NORMALIZATIONS = ("none", "constant_norm_rescale")
REQUIRED = ("W_enc", "b_enc", "W_dec", "b_dec")


@dataclass(frozen=True)
class SAESpec:
    """How an SAE encodes (from its cfg.json): `architecture` (standard, topk with `k`, jumprelu with a
    `threshold` tensor among the weights), whether `b_dec` is subtracted from the input first, the input
    normalisation, the hook it was trained on, and the cfg.json itself."""

    architecture: str = "standard"
    k: int | None = None
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    hook_name: str | None = None
    cfg: dict = field(default_factory=dict)


class SAE(torch.nn.Module):
    """The encoder half of an SAE, float32 on CPU, in eval mode; `encode` runs without gradients.
    `weights`: W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec, and `threshold` for jumprelu."""

    def __init__(self, weights: dict[str, torch.Tensor], spec: SAESpec = SAESpec()) -> None:
        super().__init__()
        W_enc, b_enc, W_dec, b_dec = (weights[n] for n in REQUIRED)
        threshold = weights.get("threshold") if spec.architecture == "jumprelu" else None
        architecture, k, normalize_activations = spec.architecture, spec.k, spec.normalize_activations
        if architecture not in ARCHITECTURES:
            raise CaptureError(f"SAE architecture {architecture!r} is not supported "
                               f"(supported: {', '.join(ARCHITECTURES)})")
        if normalize_activations not in NORMALIZATIONS:
            raise CaptureError(f"SAE normalize_activations {normalize_activations!r} is not supported "
                               f"(supported: {', '.join(NORMALIZATIONS)})")
        d_in, d_sae = W_enc.shape
        if architecture == "topk" and (k is None or not 1 <= k <= d_sae):
            raise CaptureError(f"topk SAE needs k in 1..{d_sae}, got {k}")
        if architecture == "jumprelu" and threshold is None:
            raise CaptureError("jumprelu SAE has no 'threshold' tensor")
        for name, t in (("W_enc", W_enc), ("b_enc", b_enc), ("W_dec", W_dec), ("b_dec", b_dec),
                        ("threshold", threshold)):
            if t is not None:
                self.register_buffer(name, t.detach().to(torch.float32).contiguous())
        if threshold is None:
            self.threshold = None
        self.d_in, self.d_sae = int(d_in), int(d_sae)
        self.architecture = architecture
        self.k = k
        self.apply_b_dec_to_input = spec.apply_b_dec_to_input
        self.normalize_activations = normalize_activations
        self.hook_name = spec.hook_name
        self.cfg = dict(spec.cfg)
        self.eval()

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations [..., d_sae] of inputs [..., d_in], as SAELens computes them."""
        x = x.to(torch.float32)
        if self.normalize_activations == "constant_norm_rescale":
            x = x * (math.sqrt(self.d_in) / x.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = x @ self.W_enc + self.b_enc
        if self.architecture == "standard":
            return torch.relu(pre)
        if self.architecture == "topk":
            top = torch.topk(pre, self.k, dim=-1)
            return torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))
        return torch.relu(pre) * (pre > self.threshold)


def _read_cfg(folder: Path) -> dict:
    path = folder / "cfg.json"
    if not path.is_file():
        raise CaptureError(f"SAE folder {folder} has no cfg.json")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CaptureError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CaptureError(f"{path}: expected a JSON object")
    return cfg


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / "sae_weights.safetensors"
    if not path.is_file():
        raise CaptureError(f"SAE folder {folder} has no sae_weights.safetensors")
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for a bad file
        raise CaptureError(f"{path}: corrupt or truncated safetensors file ({str(e).splitlines()[0]})") from None


def _architecture(cfg: dict) -> tuple[str, int | None]:
    """(architecture, k) from either cfg style."""
    arch = str(cfg.get("architecture") or "standard").lower()
    act = str(cfg.get("activation_fn_str") or cfg.get("activation_fn") or "").lower()
    kwargs = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k", kwargs.get("k") if isinstance(kwargs, dict) else None)
    if arch == "standard" and act == "topk":  # v5: topk was an activation function of a standard SAE
        arch = "topk"
    if act not in ("", "relu", "topk"):
        raise CaptureError(f"SAE activation function {act!r} is not supported (supported: relu, topk)")
    if arch == "topk":
        if k is None:
            raise CaptureError("topk SAE cfg.json gives no k (expected 'k' or activation_fn_kwargs.k)")
        try:
            k = int(k)
        except (TypeError, ValueError):
            raise CaptureError(f"topk SAE cfg.json has a non-integer k {k!r}") from None
    return arch, k if arch == "topk" else None


def load_sae(path: str | Path) -> SAE:
    """Load and check an SAELens-layout SAE folder (or its cfg.json / weights file)."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise CaptureError(f"SAE folder {folder} does not exist")
    cfg = _read_cfg(folder)
    arch, k = _architecture(cfg)
    norm = cfg.get("normalize_activations") or "none"
    if norm not in NORMALIZATIONS:
        raise CaptureError(f"SAE normalize_activations {norm!r} is not supported "
                           f"(supported: {', '.join(NORMALIZATIONS)})")
    reshape = cfg.get("reshape_activations") or "none"
    if reshape != "none":
        raise CaptureError(f"SAE reshape_activations {reshape!r} is not supported")
    if arch not in ARCHITECTURES:
        raise CaptureError(f"SAE architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})")
    weights = _read_weights(folder)
    if arch == "jumprelu" and "threshold" not in weights and "log_threshold" in weights:
        weights["threshold"] = weights.pop("log_threshold").float().exp()
    need = REQUIRED + (("threshold",) if arch == "jumprelu" else ())
    missing = [n for n in need if n not in weights]
    if missing:
        raise CaptureError(f"{folder / 'sae_weights.safetensors'} lacks tensor(s) {', '.join(missing)} "
                           f"(found {', '.join(sorted(weights)) or 'none'})")
    W_enc = weights["W_enc"]
    if W_enc.ndim != 2:
        raise CaptureError(f"SAE W_enc has shape {list(W_enc.shape)}, expected [d_in, d_sae]")
    d_in = int(cfg.get("d_in", W_enc.shape[0]))
    d_sae = int(cfg.get("d_sae", W_enc.shape[1]))
    expected = {"W_enc": [d_in, d_sae], "b_enc": [d_sae], "W_dec": [d_sae, d_in], "b_dec": [d_in],
                "threshold": [d_sae]}
    for name in need:
        if list(weights[name].shape) != expected[name]:
            raise CaptureError(f"SAE {name} has shape {list(weights[name].shape)} but cfg.json says "
                               f"d_in={d_in}, d_sae={d_sae} (expected {expected[name]})")
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    hook_name = cfg.get("hook_name") or meta.get("hook_name")
    spec = SAESpec(architecture=arch, k=k, apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
                   normalize_activations=norm, hook_name=hook_name, cfg=cfg)
    return SAE(weights, spec)
