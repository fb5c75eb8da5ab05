"""Reading an SAE's files: JSON configs, safetensors, shape checks, config values and the fingerprint.

Every failure is a CaptureError of one line that starts with the file it is about.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from ...errors import CaptureError

BLOCK = 1 << 20  # fingerprint read size


def located(path: Path) -> tuple[str, Path]:
    """(the name of `path` as given, made absolute; the canonical path load_sae reloads it from). A file keeps
    its own name (the Hub's cache links params.npz to a blob named by its hash): only its folder resolves."""
    name = Path(os.path.abspath(path)).name
    return name, (path.parent.resolve() / path.name if path.is_file() else path.resolve())


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_json(path: Path) -> dict:
    """A JSON object from `path`."""
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CaptureError(f"{path}: not valid JSON ({first_line(e)})") from None
    if not isinstance(cfg, dict):
        raise CaptureError(f"{path}: expected a JSON object")
    return cfg


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for a bad file
        raise CaptureError(f"{path}: corrupt or truncated safetensors file ({first_line(e)})") from None


def fingerprint(paths: Iterable[Path]) -> str:
    """sha256 over the files' bytes, in the order given, each preceded by its length (so two files never
    read as one), read in 1 MiB blocks. Equal fingerprints: the same SAE, whatever the path or file names."""
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p.stat().st_size}:".encode())
        with p.open("rb") as f:
            while block := f.read(BLOCK):
                h.update(block)
    return h.hexdigest()


def require(path: Path, tensors: Mapping[str, object], names: Iterable[str]) -> None:
    """Every name in `names` among `tensors`, else one line listing the missing and the found."""
    missing = [n for n in names if n not in tensors]
    if missing:
        raise CaptureError(f"{path} lacks tensor(s) {', '.join(missing)} "
                           f"(found {', '.join(sorted(tensors)) or 'none'})")


def check_shapes(path: Path, tensors: Mapping[str, torch.Tensor], layout: Mapping[str, tuple[str, ...]],
                 dims: Mapping[str, int], says: str | None = None) -> None:
    """Each tensor of `layout` present in `tensors` has the shape its named axes give in `dims`.
    `says` (e.g. "cfg.json says d_in=4, d_sae=8") tells where the expected sizes came from."""
    for name, axes in layout.items():
        if name not in tensors:
            continue
        got, want = list(tensors[name].shape), [dims[a] for a in axes]
        if got != want:
            where = f" but {says}" if says else ""
            raise CaptureError(f"{path}: {name} has shape {got}{where}, expected [{', '.join(axes)}] = {want}")


def matrix_dims(path: Path, tensor: torch.Tensor, name: str, axes: tuple[str, str]) -> tuple[int, int]:
    """The two sizes of a 2-D tensor, or one line saying it is not 2-D."""
    if tensor.ndim != 2:
        raise CaptureError(f"{path}: {name} has shape {list(tensor.shape)}, expected [{', '.join(axes)}]")
    return int(tensor.shape[0]), int(tensor.shape[1])


def positive_int(path: Path, cfg: Mapping, key: str, default: int | None = None, minimum: int = 1) -> int:
    """cfg[key] as an int >= minimum (`default` when absent or null; absent without default is an error)."""
    value = cfg.get(key)
    if value is None:
        if default is None:
            raise CaptureError(f"{path}: {key} is missing (expected an integer >= {minimum})")
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CaptureError(f"{path}: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def flag(path: Path, cfg: Mapping, key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise CaptureError(f"{path}: {key} must be true or false, got {value!r}")
    return value


def scalar(path: Path, tensors: Mapping[str, torch.Tensor], name: str) -> float:
    """A one-element tensor's value (a buffer saved as shape [] or [1])."""
    t = tensors[name]
    if t.numel() != 1:
        raise CaptureError(f"{path}: {name} has shape {list(t.shape)}, expected a scalar")
    return float(t.reshape(()).item())


def natural_key(name: str) -> list:
    """Sort key putting layers.2 before layers.10 (sparsify's load_many uses natsort likewise)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def summary_cfg(own: Mapping, format: str, architecture: str, k, transcoder: bool) -> dict:
    """The SAE's `cfg`: its file's own config with format, architecture, k and transcoder set on top; a value
    of the file's that ours replaces is kept as file_architecture / file_k."""
    cfg = dict(own)
    for key, value in (("architecture", architecture), ("k", k)):
        if key in own and own[key] != value:
            cfg[f"file_{key}"] = own[key]
    cfg.update(format=format, architecture=architecture, k=k, transcoder=transcoder)
    return cfg
