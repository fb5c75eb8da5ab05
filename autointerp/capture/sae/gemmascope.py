"""Gemma Scope (Google DeepMind, google/gemma-scope-* on the Hugging Face Hub): one `params.npz` per SAE, in
a folder named for it (`layer_20/width_16k/average_l0_71/params.npz`); no config file, so no hook is named.

Arrays (the Gemma Scope tutorial's JumpReLUSAE, loaded by its state dict): `W_enc` [d_model, d_sae],
`W_dec` [d_sae, d_model], `b_enc` [d_sae], `b_dec` [d_model], `threshold` [d_sae]. Some files spell the
matrices `w_enc` / `w_dec` (SAELens's Gemma 2 loader renames them); an optional `scaling_factor` only
scales the decoder and is ignored. encode: JumpReLU on x @ W_enc + b_enc, relu(pre) * (pre > threshold);
b_dec is NOT subtracted from the input. Weights are used as saved: the experimental embedding SAEs were
trained on embeddings scaled by sqrt(d_model) (SAELens rescales W_enc for them); hook a module that gives
that scale. The transcoders of gemma-scope-2b-pt-transcoders share the layout (W_dec writes the MLP output)
but cannot be told apart from the files.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ...errors import CaptureError
from .encoder import SAE, Spec
from .files import check_shapes, fingerprint, first_line, located, matrix_dims, require, summary_cfg

NPZ = "params.npz"
ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive; the Hub's cache keeps files as blobs without a suffix


def looks_like_npz(path: Path) -> bool:
    if path.suffix == ".npz":
        return True
    with path.open("rb") as f:
        return f.read(4) == ZIP_MAGIC


def _arrays(path: Path) -> dict[str, torch.Tensor]:
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise CaptureError(f"{path}: one array, expected an .npz archive of named arrays")
        with z:
            arrays = {name: z[name] for name in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise CaptureError(f"{path}: not a readable .npz file ({first_line(e)})") from None
    out = {}
    for name, a in arrays.items():
        if not np.issubdtype(a.dtype, np.floating):
            raise CaptureError(f"{path}: {name} holds {a.dtype} values, expected floats")
        out["W_" + name[2:] if name.startswith("w_") else name] = torch.from_numpy(np.ascontiguousarray(a))
    return out


def load(path: Path, *, dtype: torch.dtype = torch.float32, device=None) -> SAE:
    """The Gemma Scope SAE in `path` (a params.npz, or any .npz of that layout)."""
    w = _arrays(path)
    require(path, w, ["W_enc", "W_dec", "b_enc", "b_dec", "threshold"])
    d_model, d_sae = matrix_dims(path, w["W_enc"], "W_enc", ("d_model", "d_sae"))
    check_shapes(path, w, {"W_dec": ("d_sae", "d_model"), "b_enc": ("d_sae",), "b_dec": ("d_model",),
                           "threshold": ("d_sae",)}, {"d_model": d_model, "d_sae": d_sae})
    if not torch.isfinite(w["threshold"]).all():
        raise CaptureError(f"{path}: threshold holds a non-finite value")
    given, source = located(path)
    name = located(path.parent)[0] if path.name == NPZ else Path(given).stem
    own = {"d_in": d_model, "d_sae": d_sae, "arrays": sorted(w)}
    spec = Spec(format="gemmascope", architecture="jumprelu", name=name, source=source,
                fingerprint=fingerprint([path]), cfg=summary_cfg(own, "gemmascope", "jumprelu", None, False))
    tensors = {n: w[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}
    return SAE(tensors, spec, dtype=dtype, device=device)
