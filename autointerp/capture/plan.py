"""What one capture records: its configuration, and the dictionaries ("members") one forward pass feeds.

`--sae` may be given several times, each `PATH` or `PATH@HOOK`; a path may hold several SAEs (a sparsify
folder of hookpoint folders). An SAE whose own files name its hook (SAELens `hook_name`, a sparsify hookpoint
folder) needs no hook; `--hook` is the hook of those that name none (Gemma Scope); `PATH@HOOK` overrides both.
`--neurons HOOK` may be given several times. Each member becomes a dictionary named
`<model>/<hook>/<SAE name>` (`<model>/<hook>/neurons` for neurons) unless a single member gets `--dictionary`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import CaptureError
from .model import HookPoint, resolve_hook

if TYPE_CHECKING:
    from .held import HeldModel, HeldSAE, TextList
    from .sae import SAE

DEFAULT_BATCH_TOKENS = 4096
DEFAULT_CHECKPOINT_TOKENS = 1 << 20


@dataclass(frozen=True)
class CaptureConfig:
    """One capture. `model`: a local HF folder or GGUF file; `corpus`: a text corpus or token array
    (capture/corpus.py) with `text_column` for Parquet/JSONL/datasets; `saes`: SAE paths, each `PATH` or
    `PATH@HOOK`; `neurons`: hooks whose raw neurons are recorded; `hook`: the hook of SAEs that name none;
    `dictionary`: the name of a single member. `ctx_len` tokens a context (a token array's own width when
    None; 64 for text), at most `max_tokens`; values above `threshold` kept; `batch_tokens` tokens a forward
    pass; `device`/`dtype` of the model (capture/device.py), `sae_dtype` of the SAEs' encode;
    `checkpoint_tokens` between commits (a killed capture resumes from the last); `neighbors` decoder-cosine
    neighbours per SAE latent; `replace` existing dictionaries (and start an unfinished capture over);
    `outputs`: output directions and their logit lens. Checked when made (CaptureError).

    In a notebook, what is already in memory goes where a path would (capture/held.py): `model` a
    `HeldModel` (a loaded model and its tokenizer), each of `saes` a `HeldSAE` (an `encode` callable),
    `corpus` a `TextList`; no file is needed."""

    model: str | Path | HeldModel
    corpus: str | Path | TextList
    saes: tuple[str | HeldSAE, ...] = ()
    neurons: tuple[str, ...] = ()
    hook: str | None = None
    dictionary: str | None = None
    text_column: str = "text"
    ctx_len: int | None = None
    max_tokens: int | None = None
    threshold: float = 0.0
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    device: str = "auto"
    dtype: str = "auto"
    sae_dtype: str = "float32"
    checkpoint_tokens: int = DEFAULT_CHECKPOINT_TOKENS
    neighbors: int = 0
    replace: bool = False
    outputs: bool = True

    def __post_init__(self) -> None:
        from .held import HeldModel, HeldSAE

        if isinstance(self.saes, (str, Path, HeldSAE)):
            raise CaptureError("saes takes a tuple of SAEs: (sae,), not one")
        object.__setattr__(self, "saes", tuple(s if isinstance(s, HeldSAE) else str(s) for s in self.saes))
        if any(isinstance(s, HeldSAE) for s in self.saes) and not isinstance(self.model, HeldModel):
            raise CaptureError("a HeldSAE reads a HeldModel's activations: give the model as HeldModel(...) too")
        object.__setattr__(self, "neurons", tuple(self.neurons))
        if not self.saes and not self.neurons:
            raise CaptureError("nothing to capture: give --sae PATH[@HOOK] or --neurons HOOK (each may repeat)")
        if self.ctx_len is not None and self.ctx_len < 2:
            raise CaptureError(f"ctx_len must be >= 2, got {self.ctx_len}")
        for name in ("max_tokens", "batch_tokens", "checkpoint_tokens"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise CaptureError(f"{name} must be >= 1, got {v}")
        if not math.isfinite(self.threshold):
            raise CaptureError(f"threshold must be a finite number, got {self.threshold}")
        if self.neighbors < 0:
            raise CaptureError(f"neighbors must be >= 0, got {self.neighbors}")
        if self.neighbors and not self.saes:
            raise CaptureError("neighbors need an SAE's decoder directions; they are not available with --neurons")
        if len(set(self.neurons)) != len(self.neurons):
            raise CaptureError("--neurons names one hook twice")

    def batch_contexts(self, ctx_len: int) -> int:
        """Contexts a forward pass: `batch_tokens` worth, at least one."""
        return max(1, self.batch_tokens // ctx_len)


@dataclass
class Member:
    """One dictionary a capture makes: an SAE's latents at its hook, or a hook's raw neurons."""

    name: str
    kind: str  # "sae" | "neurons"
    point: HookPoint
    sae: SAE | HeldSAE | None = None
    width: int | None = None  # neurons: known after the first forward pass
    config: dict = field(default_factory=dict)

    @property
    def source(self) -> str:
        return str(self.sae.source) if self.sae is not None else ""

    def describe(self) -> dict:
        """What the store's capture row keeps of it (and what a resume must find again)."""
        return {"name": self.name, "kind": self.kind, "hook": self.point.hook, "source": self.source,
                "width": self.width, "fingerprint": getattr(self.sae, "fingerprint", None)}


def split_sae_spec(spec: str) -> tuple[Path, str | None]:
    """`PATH` or `PATH@HOOK` -> (path, hook or None). A path that exists as written is never split."""
    if Path(spec).exists() or "@" not in spec:
        return Path(spec), None
    path, _, hook = spec.rpartition("@")
    if not hook:
        raise CaptureError(f"--sae {spec!r}: nothing after '@' (write PATH@HOOK)")
    return Path(path), hook


def plan_members(net: torch.nn.Module, label: str, config: CaptureConfig, device: torch.device,
                 sae_dtype: torch.dtype) -> list[Member]:
    """Load every SAE (on `device`, in `sae_dtype`), resolve every hook, and name every dictionary
    (`<label>/<hook>/<SAE>`); one line (CaptureError) for an SAE without a hook, an unknown hook, or two
    members that would share a name."""
    members: list[Member] = []
    for spec in config.saes:
        from .sae import load_saes  # only a capture with SAEs needs the SAE readers

        if isinstance(spec, str):
            path, hook = split_sae_spec(spec)
            saes: list[SAE | HeldSAE] = list(load_saes(path))
        else:
            path, hook, saes = Path(spec.source), None, [spec]
        for sae in saes:
            where = hook or sae.hook_name or config.hook
            if where is None:
                how = (f"--sae {path}@HOOK, or --hook HOOK" if isinstance(spec, str)
                       else "HeldSAE(..., hook=HOOK), or CaptureConfig(hook=HOOK)")
                raise CaptureError(f"SAE {sae.source} does not say which hook it reads: give it as {how}")
            point = resolve_hook(net, where)
            sae = sae.to(device=device, dtype=sae_dtype)
            members.append(Member(f"{label}/{point.hook}/{sae.name}", "sae", point, sae, sae.d_sae,
                                  {"sae_cfg": sae.cfg, "sae_format": sae.format, "sae_hook": sae.hook_name}))
    for hook in config.neurons:
        point = resolve_hook(net, hook)
        members.append(Member(f"{label}/{point.hook}/neurons", "neurons", point))
    if config.dictionary is not None:
        if len(members) > 1:
            raise CaptureError(f"--dictionary names one dictionary, but this capture makes {len(members)} "
                               f"({', '.join(m.name for m in members)}); leave it out to name each "
                               "<model>/<hook>/<SAE>")
        members[0].name = config.dictionary
    seen: dict[str, Member] = {}
    for m in members:
        if m.name in seen:
            raise CaptureError(f"two dictionaries of this capture would both be named {m.name!r} "
                               f"({seen[m.name].source or 'neurons'} and {m.source or 'neurons'}): capture them "
                               "separately with --dictionary NAME")
        seen[m.name] = m
    return members


def check_widths(members: list[Member], widths: list[int]) -> None:
    """Each SAE's d_in against its hook's width (read off a first forward pass); neurons take the width."""
    for m, w in zip(members, widths):
        if m.sae is None:
            m.width = int(w)
        elif m.sae.d_in != w:
            raise CaptureError(f"SAE {m.sae.source} has d_in {m.sae.d_in} but hook {m.point.hook} is {w} wide")


def capture_fingerprint(corpus_fp: str, model: str, members: list[Member], config: CaptureConfig,
                        model_dtype: torch.dtype, sae_dtype: torch.dtype) -> str:
    """Equal fingerprints mean one capture: what a resume must find again (the model, the corpus and its
    packing, each member's hook and SAE content, the threshold and precisions). The device and batch size are
    not in it."""
    doc = {"corpus": corpus_fp, "model": model, "threshold": config.threshold, "dtype": str(model_dtype),
           "sae_dtype": str(sae_dtype),
           "members": [[m.name, m.kind, m.point.hook, getattr(m.sae, "fingerprint", None)] for m in members]}
    return "capture-v2:" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
