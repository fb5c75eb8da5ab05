"""The one encoder every SAE format loads into: its weights in one layout, and the activation rules.

Tensors, whatever the file called them:
  W_enc [d_in, d_sae]   b_enc [d_sae] (not gated)   W_dec [d_sae, d_out]: the output directions (decoder rows)
  b_in [d_in]: subtracted from the input first, when the format does (SAELens `apply_b_dec_to_input`,
      sparsify's b_dec, dictionary_learning's `bias` / `b_dec`); None when it does not
  b_dec [d_out]: the decoder bias, kept for reference (encoding never uses it)
  threshold [d_sae]: jumprelu and batchtopk;  b_gate, b_mag, r_mag [d_sae]: gated

encode(x) = act(pre), pre = (norm(x) - b_in) @ W_enc + b_enc, times ||W_dec[i]|| when
`rescale_acts_by_decoder_norm`; act by `architecture`:
  standard   relu(pre)
  jumprelu   relu(pre) * (pre > threshold)            (batchtopk at inference: the same, one threshold)
  topk       the k largest of relu(pre), others 0
  groupmax   relu(pre) in k equal groups of latents, each group's largest kept (sparsify)
  gated      (x' @ W_enc + b_gate > 0) * relu((x' @ W_enc) * exp(r_mag) + b_mag), x' = norm(x) - b_in
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...errors import CaptureError

ARCHITECTURES = ("standard", "topk", "jumprelu", "batchtopk", "gated", "groupmax")
NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm")
FORMATS = ("saelens", "sparsify", "gemmascope", "dictionary_learning")
BUFFERS = ("W_enc", "b_enc", "W_dec", "b_dec", "b_in", "threshold", "b_gate", "b_mag", "r_mag", "dec_norm")


@dataclass(frozen=True)
class Spec:
    """Everything about an SAE but its tensors: where it came from (`format`, `name`, `source`, the
    `fingerprint` of its files, its own config `cfg`), how it encodes (`architecture`, `k`, the input
    normalisation, whether pre-activations are scaled by decoder norms), and where it reads and writes
    (`hook_name`, `out_hook`, verbatim from its files; `transcoder`: writes somewhere else than it reads)."""

    format: str
    architecture: str
    name: str
    source: Path
    fingerprint: str
    k: int | float | None = None
    normalize_activations: str = "none"
    rescale_acts_by_decoder_norm: bool = False
    transcoder: bool = False
    hook_name: str | None = None
    out_hook: str | None = None
    cfg: dict = field(default_factory=dict)


class SAE(torch.nn.Module):
    """An SAE's encoder and output directions, in eval mode, weights as buffers (float32 unless `dtype` says
    otherwise; `.to(device)` / `.to(dtype)` move them). `encode` runs without gradients on the SAE's device
    and dtype. Attributes: d_in, d_sae, d_out, W_dec [d_sae, d_out], format, architecture, k, hook_name,
    out_hook, transcoder, name, source, cfg, fingerprint."""

    # the buffers (registered in __init__; None where the architecture has no such tensor)
    W_enc: torch.Tensor
    W_dec: torch.Tensor
    b_enc: torch.Tensor | None
    b_dec: torch.Tensor | None
    b_in: torch.Tensor | None
    threshold: torch.Tensor | None
    b_gate: torch.Tensor | None
    b_mag: torch.Tensor | None
    r_mag: torch.Tensor | None
    dec_norm: torch.Tensor | None

    def __init__(self, tensors: Mapping[str, torch.Tensor | None], spec: Spec, *,
                 dtype: torch.dtype = torch.float32, device: str | torch.device | None = None) -> None:
        super().__init__()
        arch = spec.architecture
        if arch not in ARCHITECTURES:
            raise CaptureError(f"{spec.source}: SAE architecture {arch!r} is not supported "
                               f"(supported: {', '.join(ARCHITECTURES)})")
        if spec.normalize_activations not in NORMALIZATIONS:
            raise CaptureError(f"{spec.source}: normalize_activations {spec.normalize_activations!r} is not "
                               f"supported (supported: {', '.join(NORMALIZATIONS)})")
        need = ["W_enc", "W_dec"] + (["b_gate", "b_mag", "r_mag"] if arch == "gated" else ["b_enc"])
        need += ["threshold"] if arch in ("jumprelu", "batchtopk") else []
        missing = [n for n in need if tensors.get(n) is None]
        if missing:
            raise CaptureError(f"{spec.source}: SAE lacks {', '.join(missing)}")
        w_enc, w_dec = tensors["W_enc"], tensors["W_dec"]
        assert w_enc is not None and w_dec is not None  # both in `need`, so not missing
        if w_enc.ndim != 2 or w_dec.ndim != 2:
            raise CaptureError(f"{spec.source}: SAE W_enc and W_dec must be matrices, got shapes "
                               f"{list(w_enc.shape)} and {list(w_dec.shape)}")
        d_in, d_sae = w_enc.shape
        d_out = w_dec.shape[1]
        shapes = {"W_enc": [d_in, d_sae], "W_dec": [d_sae, d_out], "b_enc": [d_sae], "b_dec": [d_out],
                  "b_in": [d_in], "threshold": [d_sae], "b_gate": [d_sae], "b_mag": [d_sae], "r_mag": [d_sae]}
        for name, shape in shapes.items():
            t = tensors.get(name)
            if t is not None and list(t.shape) != shape:
                raise CaptureError(f"{spec.source}: SAE {name} has shape {list(t.shape)}, expected {shape}")
        if arch in ("topk", "groupmax"):
            if not isinstance(spec.k, int) or not 1 <= spec.k <= d_sae:
                raise CaptureError(f"{spec.source}: {arch} SAE needs k in 1..{d_sae}, got {spec.k!r}")
            if arch == "groupmax" and d_sae % spec.k:
                raise CaptureError(f"{spec.source}: groupmax needs k ({spec.k}) to divide the {d_sae} latents")
        weights = {n: tensors.get(n) for n in BUFFERS if n != "dec_norm"}
        if spec.rescale_acts_by_decoder_norm:
            weights["dec_norm"] = w_dec.double().norm(dim=1)
        for name in BUFFERS:
            t = weights.get(name)
            self.register_buffer(name, None if t is None else t.detach().to(dtype).contiguous())
        if device is not None:
            self.to(device)
        self.d_in, self.d_sae, self.d_out = int(d_in), int(d_sae), int(d_out)
        self.spec = spec
        self.format, self.architecture, self.k = spec.format, arch, spec.k
        self.normalize_activations = spec.normalize_activations
        self.transcoder = spec.transcoder
        self.hook_name, self.out_hook = spec.hook_name, spec.out_hook
        self.name, self.source, self.fingerprint = spec.name, spec.source, spec.fingerprint
        self.cfg = dict(spec.cfg)
        self.eval()

    def extra_repr(self) -> str:
        k = f", k={self.k}" if self.k is not None else ""
        return (f"{self.format} {self.architecture}{k}, d_in={self.d_in}, d_sae={self.d_sae}, "
                f"d_out={self.d_out}, hook={self.hook_name!r}, source={str(self.source)!r}")

    def _pre(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Pre-activations [..., d_sae] (gated: the (gate, magnitude) pre-activations)."""
        x = x.to(device=self.W_enc.device, dtype=self.W_enc.dtype)
        if self.normalize_activations == "constant_norm_rescale":
            x = x * (self.d_in ** 0.5 / x.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        elif self.normalize_activations == "layer_norm":  # SAELens: (x - mean) / (unbiased std + 1e-5)
            x = x - x.mean(dim=-1, keepdim=True)
            x = x / (x.std(dim=-1, keepdim=True) + 1e-5)
        if self.b_in is not None:
            x = x - self.b_in
        base = x @ self.W_enc
        if self.architecture == "gated":
            b_gate, b_mag, r_mag = self.b_gate, self.b_mag, self.r_mag
            assert b_gate is not None and b_mag is not None and r_mag is not None  # gated needs them (__init__)
            return base + b_gate, base * r_mag.exp() + b_mag
        assert self.b_enc is not None  # every other architecture needs it (__init__)
        pre = base + self.b_enc
        return pre * self.dec_norm if self.dec_norm is not None else pre

    def _selected(self, acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TopK / GroupMax: the (values, latent ids) [..., k] each input keeps."""
        k = self.k
        assert isinstance(k, int)  # topk and groupmax SAEs have an int k (__init__)
        if self.architecture == "topk":
            top = acts.topk(k, dim=-1, sorted=False)
            return top.values, top.indices
        values, index = acts.unflatten(-1, (k, -1)).max(dim=-1)
        return values, index + torch.arange(0, self.d_sae, self.d_sae // k, device=index.device)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations [..., d_sae] of inputs [..., d_in], on the SAE's device and in its dtype."""
        pre = self._pre(x)
        if isinstance(pre, tuple):  # gated
            gate, mag = pre
            return torch.relu(mag) * (gate > 0)
        acts = torch.relu(pre)
        if self.architecture in ("jumprelu", "batchtopk"):
            assert self.threshold is not None  # both need it (__init__)
            return acts * (pre > self.threshold)
        if self.architecture in ("topk", "groupmax"):
            values, index = self._selected(acts)
            return torch.zeros_like(acts).scatter_(-1, index, values)
        return acts

    @torch.no_grad()
    def encode_sparse(self, x: torch.Tensor, threshold: float = 0.0) -> tuple[torch.Tensor, ...]:
        """The latents of x [n, d_in] above `threshold` (>= 0): (input row, latent id, value) [m] each, every
        nonzero once, in no particular order. TopK and GroupMax keep k values a row and never build the
        dense [n, d_sae] matrix (with a 2^20-wide SAE that is most of the cost)."""
        if self.architecture in ("topk", "groupmax") and threshold >= 0:
            pre = self._pre(x)
            assert isinstance(pre, torch.Tensor)  # only gated pre-activations are a (gate, magnitude) pair
            values, index = self._selected(torch.relu(pre))
            keep = values > threshold
            rows = torch.arange(len(values), device=values.device)[:, None].expand_as(index)
            return rows[keep], index[keep], values[keep]
        acts = self.encode(x)
        keep = acts > threshold
        where = keep.nonzero()
        return where[:, 0], where[:, 1], acts[keep]
