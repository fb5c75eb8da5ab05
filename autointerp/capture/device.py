"""Where a model runs and in what precision: `--device` and `--dtype`, checked once, the same for every command
that runs a model (capture, trace, and the bundled MiniLM encoder of label, encode and serve).

Devices: `auto` (CUDA when torch sees a GPU, else Apple's MPS when present, else the CPU), `cpu`, `cuda`,
`cuda:N`, `mps`. A device that is not there is a CaptureError (exit 5) naming it, raised before anything is
loaded or written. Dtypes: `auto` (bfloat16 on a CUDA GPU that supports it, else float16; float32 on MPS,
where float16 overflows in models such as Gemma, and on the CPU), `float32`, `bfloat16`, `float16`. The GPU
path is the CPU path: the same code with another device.
"""

from __future__ import annotations

import re

import torch

from ..errors import CaptureError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch device `name` stands for, checked to exist here."""
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m:
        if not torch.cuda.is_available():
            raise CaptureError(f"device {name!r} is not available: torch sees no CUDA GPU here "
                               f"(torch {torch.__version__}{', a CPU-only build' if torch.version.cuda is None else ''});"
                               " use --device cpu or auto")
        index = int(m.group(1)) if m.group(1) else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise CaptureError(f"device {name!r} is not available: torch sees {torch.cuda.device_count()} CUDA "
                               f"GPU(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})")
        return torch.device("cuda", index)
    if name == "mps":
        if not _mps_available():
            raise CaptureError("device 'mps' is not available: this torch has no Apple MPS backend here; "
                               "use --device cpu or auto")
        return torch.device("mps")
    raise CaptureError(f"unknown device {name!r} (choose from: {', '.join(DEVICES)})")


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """The model's dtype: `auto` picks bfloat16 on a CUDA GPU that has it (else float16), else float32."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise CaptureError(f"unknown dtype {name!r} (choose from: auto, {', '.join(DTYPES)})")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU): for honest timings."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
