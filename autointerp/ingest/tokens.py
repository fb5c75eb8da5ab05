"""Token strings from a local Hugging Face tokenizer, so a store reads back without one."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import IngestError


def load_tokenizer(path: str | Path):
    """A tokenizer from a local folder; never reaches a hub."""
    p = Path(path)
    if not p.is_dir():
        raise IngestError(f"tokenizer folder {p} does not exist")
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except Exception as e:  # transformers raises many types for a bad folder
        raise IngestError(f"cannot load a tokenizer from {p}: {str(e).splitlines()[0]}") from None


def _decoder_kind(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    dec = getattr(backend, "decoder", None) if backend is not None else None
    name = type(dec).__name__ if dec is not None else ""
    if name == "Sequence":  # e.g. Metaspace inside a sequence of decoders
        name = repr(dec)
    for kind in ("WordPiece", "ByteLevel", "Metaspace"):
        if kind in name:
            return kind
    return "other"


def vocab_strings(tokenizer) -> list[str]:
    """Display string of every token id, with the whitespace the token carries in running text.

    WordPiece (BERT): "##ing" -> "ing", "cat" -> " cat". Byte-level BPE (GPT-2): "Ġcat" -> " cat";
    a token holding part of a UTF-8 character renders as U+FFFD. SentencePiece: "▁cat" -> " cat".
    Special tokens are kept as written ("[CLS]", "<|endoftext|>").
    """
    n = len(tokenizer)
    raw = tokenizer.convert_ids_to_tokens(list(range(n)))
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    kind = _decoder_kind(tokenizer)
    out: list[str] = []
    for i, tok in enumerate(raw):
        if tok is None:
            out.append("")
        elif tok in special:
            out.append(tok)
        elif kind == "WordPiece":
            out.append(tok[2:] if tok.startswith("##") else " " + tok)
        elif kind == "ByteLevel":
            out.append(tokenizer.convert_tokens_to_string([tok]))
        elif kind == "Metaspace":
            out.append(tok.replace("\u2581", " "))
        else:
            out.append(tokenizer.decode([i], clean_up_tokenization_spaces=False))
    return out


class TokenStrings:
    """Maps token-id arrays to lists of display strings, checking ids against the vocabulary."""

    def __init__(self, tokenizer, name: str) -> None:
        self.name = name
        self.table = np.array(vocab_strings(tokenizer), dtype=object)

    @classmethod
    @lru_cache(maxsize=4)
    def from_folder(cls, path: str) -> TokenStrings:
        return cls(load_tokenizer(path), str(Path(path).resolve()))

    def __call__(self, ids: np.ndarray) -> list[list[str]]:
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.table)):
            bad = int(ids.max() if ids.max() >= len(self.table) else ids.min())
            raise IngestError(f"token id {bad} out of range for tokenizer {self.name} "
                              f"(vocabulary of {len(self.table)})")
        return [self.table[row].tolist() for row in ids]


def fingerprint_tokens(token_ids: np.ndarray) -> str:
    """sha256 over a 2-D token-id array (as little-endian int64) and its shape."""
    a = np.ascontiguousarray(token_ids, dtype="<i8")
    h = hashlib.sha256(f"{a.shape}".encode())
    h.update(a.tobytes())
    return "tokens:" + h.hexdigest()
