"""Which SAE layout a path holds (by the files present), and loading one SAE or a folder of them."""

from __future__ import annotations

from pathlib import Path

import torch

from ...errors import CaptureError
from . import dictionary_learning, gemmascope, saelens, sparsify
from .encoder import SAE

# the files that make each layout, in the order they are tried
LAYOUTS = {"saelens": (saelens.CFG, saelens.WEIGHTS), "sparsify": (sparsify.CFG, sparsify.WEIGHTS),
           "gemmascope": (gemmascope.NPZ,), "dictionary_learning": (dictionary_learning.AE, dictionary_learning.CONFIG)}
PROJECTS = {"saelens": "SAELens", "sparsify": "sparsify", "gemmascope": "Gemma Scope",
            "dictionary_learning": "dictionary_learning"}
FOLDER_FILES = {name for names in LAYOUTS.values() for name in names} - {gemmascope.NPZ}


def layout(folder: Path) -> str | None:
    """The format whose files `folder` holds, or None."""
    return next((fmt for fmt, names in LAYOUTS.items() if all((folder / n).is_file() for n in names)), None)


def _unknown(folder: Path) -> CaptureError:
    """One line saying what the folder lacks, as near to what it holds as can be told."""
    def has(name: str) -> bool:
        return (folder / name).is_file()

    if has(saelens.CFG):
        return CaptureError(f"SAE folder {folder} has no {saelens.WEIGHTS} (SAELens) or {sparsify.WEIGHTS} "
                            f"(sparsify) beside its {saelens.CFG}")
    for fmt, (first, second) in (("saelens", (saelens.WEIGHTS, saelens.CFG)),
                                 ("sparsify", (sparsify.WEIGHTS, sparsify.CFG)),
                                 ("dictionary_learning", (dictionary_learning.AE, dictionary_learning.CONFIG))):
        if has(first):
            return CaptureError(f"SAE folder {folder} has {first} but no {second} ({PROJECTS[fmt]} needs both)")
    hooks = sparsify.hookpoints(folder)
    if hooks:
        names = ", ".join(h.name for h in hooks[:4]) + (", ..." if len(hooks) > 4 else "")
        return CaptureError(f"SAE folder {folder} holds {len(hooks)} sparsify hookpoint folders ({names}): "
                            "give one of them, or load them all (load_saes)")
    held = ", ".join("+".join(names) + f" ({PROJECTS[fmt]})" for fmt, names in LAYOUTS.items())
    return CaptureError(f"SAE folder {folder} holds none of {held}")


def load_sae(path: str | Path, *, dtype: torch.dtype = torch.float32,
             device: str | torch.device | None = None) -> SAE:
    """Exactly one SAE: a SAELens folder (or its cfg.json / weights file), a sparsify hookpoint folder (or
    its files), a Gemma Scope .npz or the folder holding params.npz, a dictionary_learning folder (or its
    files). The layout is told by the files present; weights become `dtype` buffers on `device`."""
    p = Path(path)
    if p.is_file():
        if p.name in FOLDER_FILES:
            p = p.parent
        elif gemmascope.looks_like_npz(p):
            return gemmascope.load(p, dtype=dtype, device=device)
        else:
            raise CaptureError(f"{p}: not a file of a known SAE layout (give the SAE's folder, or one of "
                               f"{', '.join(sorted(FOLDER_FILES | {gemmascope.NPZ}))})")
    if not p.is_dir():
        raise CaptureError(f"SAE folder {p} does not exist")
    fmt = layout(p)
    if fmt is None:
        raise _unknown(p)
    if fmt == "gemmascope":
        return gemmascope.load(p / gemmascope.NPZ, dtype=dtype, device=device)
    loader = {"saelens": saelens.load, "sparsify": sparsify.load, "dictionary_learning": dictionary_learning.load}
    return loader[fmt](p, dtype=dtype, device=device)


def load_saes(path: str | Path, *, dtype: torch.dtype = torch.float32,
              device: str | torch.device | None = None) -> list[SAE]:
    """Every SAE at `path`: a sparsify folder of hookpoint folders gives each of them, in natural order of
    name (layers.2 before layers.10, as sparsify's load_many; folders without cfg.json + sae.safetensors,
    such as a run's best/, are passed over); anything else is [load_sae(path)]."""
    p = Path(path)
    if p.is_dir() and layout(p) is None:
        hooks = sparsify.hookpoints(p)
        if hooks:
            return [sparsify.load(h, dtype=dtype, device=device) for h in hooks]
    return [load_sae(p, dtype=dtype, device=device)]
