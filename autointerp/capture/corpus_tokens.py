"""Pre-tokenised corpora: token-id arrays of shape [n_rows, ctx_len] in a `.npy` or `.safetensors` file.

A row is one context, used as is: no tokenizer pass, no packing. The file is never read whole: `.npy` is
memory-mapped (`np.load(mmap_mode="r")`) and `.safetensors` is read a slice of rows at a time
(`safe_open(...).get_slice(name)[a:b]`), so memory is bounded by the rows asked for, whatever the file's size.
`open_tokens` checks what the header tells (ndim, dtype, rows); the ids themselves are checked as they are
read (`rows`, `max_id`), since that needs a pass over the data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from safetensors import safe_open

from ..errors import CaptureError

# delphi's cache layout names its token tensor so (int64 [n_seq, ctx_len])
TOKENS_TENSOR = "tokens"
# max_id scans this many bytes of int64 ids a block
SCAN_BYTES = 4 << 20
_INT_DTYPES = {"I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64,
               "U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64}
_INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True)
class TokenCorpus:
    """Token ids [n_rows, ctx_len] in `path` (a `.npy` file, or the safetensors `tensor` of a `.safetensors`
    file); a row is one context. Made by `open_corpus`, which checked the header."""

    path: Path
    n_rows: int
    ctx_len: int
    tensor: str | None = None  # the safetensors tensor's name; None for .npy
    kind: ClassVar[str] = "tokens"

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as int64 [stop - start, ctx_len]. CaptureError on a negative id (or one past
        int64); IndexError on a range outside [0, n_rows]."""
        if not 0 <= start <= stop <= self.n_rows:
            raise IndexError(f"rows [{start}, {stop}) outside [0, {self.n_rows}) of {self.path}")
        with self._open() as arr:
            block = np.asarray(arr[start:stop])
        _check_ids(block, self.path, start)
        return np.ascontiguousarray(block, dtype=np.int64)

    def max_id(self) -> int:
        """The largest token id, scanned a block of rows at a time (the caller holds it against the tokenizer's
        vocabulary). CaptureError on a negative id."""
        step = max(1, SCAN_BYTES // (8 * self.ctx_len))
        top = 0
        with self._open() as arr:
            for start in range(0, self.n_rows, step):
                block = np.asarray(arr[start:min(start + step, self.n_rows)])  # safetensors does not clip
                _check_ids(block, self.path, start)
                top = max(top, int(block.max()))
        return top

    def fingerprint(self) -> str:
        """sha256 of the file's bytes and the tensor's name: equal fingerprints mean equal rows."""
        h = hashlib.sha256(f"tokens-v1|{self.tensor or ''}|".encode())
        with self.path.open("rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
        return h.hexdigest()

    def describe(self) -> str:
        where = f"{self.path}" + (f" tensor {self.tensor!r}" if self.tensor else "")
        return f"{where}: {self.n_rows:,} pre-tokenised contexts of {self.ctx_len} tokens"

    @contextmanager
    def _open(self) -> Iterator:
        """Something sliced by rows: the memory-mapped array, or the safetensors slice."""
        if self.tensor is None:
            yield np.load(self.path, mmap_mode="r")
            return
        with safe_open(self.path, framework="numpy") as f:
            yield f.get_slice(self.tensor)


def _check_ids(block: np.ndarray, path: Path, start: int) -> None:
    if block.size == 0:
        return
    if np.issubdtype(block.dtype, np.signedinteger) and block.min() < 0:
        row = start + int(np.argmax((block < 0).any(axis=1)))
        raise CaptureError(f"corpus {path}: row {row} holds a negative token id ({int(block.min())})")
    if block.dtype.itemsize == 8 and np.issubdtype(block.dtype, np.unsignedinteger) and block.max() > _INT64_MAX:
        raise CaptureError(f"corpus {path}: a token id past int64 near row {start} ({int(block.max())})")


def open_tokens(path: Path) -> TokenCorpus:
    """Check a `.npy` / `.safetensors` token file's header (2-D, an integer dtype, at least one row and column)
    and describe it. CaptureError, one line naming the path, otherwise."""
    if path.suffix.lower() == ".npy":
        n, ctx, tensor = *_npy_shape(path), None
    else:
        n, ctx, tensor = _safetensors_shape(path)
    if n == 0 or ctx == 0:
        raise CaptureError(f"corpus {path}: token ids of shape [{n}, {ctx}] hold no context "
                           "(expected [n_rows >= 1, ctx_len >= 1])")
    return TokenCorpus(path, n, ctx, tensor)


def _npy_shape(path: Path) -> tuple[int, int]:
    expected = "expected an integer array [n_rows, ctx_len]"
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        raise CaptureError(f"corpus {path}: not a readable .npy file ({one_line(e)}); {expected}") from None
    if not isinstance(arr, np.ndarray):  # np.load opens a zip (.npz) whatever its name
        raise CaptureError(f"corpus {path}: an .npz archive, not one .npy array; {expected}")
    _check_header(path, arr.shape, arr.dtype, expected)
    return int(arr.shape[0]), int(arr.shape[1])


def _safetensors_shape(path: Path) -> tuple[int, int, str]:
    try:
        with safe_open(path, framework="numpy") as f:
            shapes = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except Exception as e:  # the Rust reader raises SafetensorError, an Exception outside any hierarchy
        raise CaptureError(f"corpus {path}: not a readable .safetensors file ({one_line(e)})") from None
    if TOKENS_TENSOR in shapes:
        name = TOKENS_TENSOR
    else:
        found = [k for k, (shape, dt) in shapes.items() if len(shape) == 2 and dt in _INT_DTYPES]
        if len(found) != 1:
            listed = ", ".join(f"{k} {list(s)} {dt}" for k, (s, dt) in sorted(shapes.items())) or "none"
            raise CaptureError(f"corpus {path}: no tensor {TOKENS_TENSOR!r} and {len(found)} 2-D integer tensors, "
                               f"expected one [n_rows, ctx_len] (tensors: {listed})")
        name = found[0]
    shape, dt = shapes[name]
    _check_header(path, shape, np.dtype(_INT_DTYPES[dt]) if dt in _INT_DTYPES else dt,
                  f"expected tensor {name!r} to be integer token ids [n_rows, ctx_len]")
    return int(shape[0]), int(shape[1]), name


def _check_header(path: Path, shape: tuple, dtype, expected: str) -> None:
    if len(shape) != 2:
        raise CaptureError(f"corpus {path}: token ids of shape {list(shape)} ({len(shape)}-D); {expected}")
    if not (isinstance(dtype, np.dtype) and np.issubdtype(dtype, np.integer)):
        raise CaptureError(f"corpus {path}: token ids of dtype {dtype}; {expected}")


def one_line(e: BaseException) -> str:
    """An exception's message on one line, cut to 200 characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."
