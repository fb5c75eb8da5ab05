"""Read a text corpus and pack it into fixed-length token contexts, streaming.

Contexts are all exactly `ctx_len` tokens so a batch needs no padding (attention mask all ones)
and every context id maps to the same number of stored tokens. Both functions are generators:
a corpus of any size is read one line at a time and never held in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import CaptureError

SUFFIXES = (".txt", ".jsonl")


def check_corpus_path(path: str | Path) -> Path:
    """The corpus file, checked to exist and to have a supported extension."""
    p = Path(path)
    if p.suffix.lower() not in SUFFIXES:
        raise CaptureError(f"corpus {p}: unsupported extension {p.suffix or '(none)'!r} "
                           f"(use .txt, one document per line, or .jsonl with a 'text' field)")
    if not p.is_file():
        raise CaptureError(f"corpus file {p} does not exist")
    return p


def read_corpus(path: str | Path) -> Iterator[str]:
    """Yield the documents of a corpus file.

    `.txt`: one document per line, blank lines skipped. `.jsonl`: one JSON object per line whose
    `text` field (a string) is the document; blank lines skipped. Errors name the line number.
    """
    p = check_corpus_path(path)
    is_jsonl = p.suffix.lower() == ".jsonl"
    try:
        with p.open("r", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                if not is_jsonl:
                    yield line.rstrip("\r\n")
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CaptureError(f"corpus {p} line {lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict) or "text" not in obj:
                    raise CaptureError(f"corpus {p} line {lineno}: no 'text' field")
                if not isinstance(obj["text"], str):
                    raise CaptureError(f"corpus {p} line {lineno}: 'text' is {type(obj['text']).__name__}, "
                                       "not a string")
                yield obj["text"]
    except UnicodeDecodeError as e:
        raise CaptureError(f"corpus {p} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def file_sha256(path: str | Path) -> str:
    """Content hash of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def special_template(tokenizer) -> tuple[list[int], list[int]]:
    """(prefix, suffix) special-token ids the tokenizer wraps a single sequence with ([CLS] / [SEP]).

    Uses `build_inputs_with_special_tokens` where it exists (transformers 4.x); transformers 5.x
    dropped it from fast tokenizers, so there the template is read off by tokenizing a probe text
    with and without special tokens.
    """
    build = getattr(tokenizer, "build_inputs_with_special_tokens", None)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    if build is not None:
        probe = next(i for i in range(len(tokenizer)) if i not in special)
        full = list(build([probe]))
        plain = [probe]
    else:
        text = "probe text"
        full = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        plain = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    raise CaptureError(f"cannot work out how tokenizer {getattr(tokenizer, 'name_or_path', '?')} "
                       "adds special tokens")


def separator_id(tokenizer) -> int | None:
    """The token placed between concatenated documents: the tokenizer's sep token, else its eos token."""
    for attr in ("sep_token_id", "eos_token_id"):
        tid = getattr(tokenizer, attr, None)
        if isinstance(tid, int):
            return tid
    return None


def pack_contexts(tokenizer, docs: Iterable[str], ctx_len: int, max_tokens: int | None = None, *,
                  source: str = "corpus") -> Iterator[list[int]]:
    """Yield token-id lists of exactly `ctx_len`, each wrapped in the tokenizer's special tokens.

    Documents are tokenized without special tokens and joined with the separator token; the
    stream is cut into pieces of `ctx_len - n_special` tokens and each piece wrapped ([CLS] piece
    [SEP] for BERT). A trailing partial piece is dropped. Stops before the total would exceed
    `max_tokens`. Raises CaptureError if not one full context comes out.
    """
    prefix, suffix = special_template(tokenizer)
    body = ctx_len - len(prefix) - len(suffix)
    if body < 1:
        raise CaptureError(f"ctx_len {ctx_len} leaves no room for text after the tokenizer's "
                           f"{len(prefix) + len(suffix)} special tokens")
    budget = None if max_tokens is None else max_tokens // ctx_len
    if budget is not None and budget < 1:
        raise CaptureError(f"max_tokens {max_tokens} is smaller than one context of {ctx_len} tokens")
    sep = separator_id(tokenizer)
    buf: list[int] = []
    n = 0
    first = True
    for doc in docs:
        if not first and sep is not None:
            buf.append(sep)
        first = False
        buf.extend(tokenizer(doc, add_special_tokens=False, verbose=False)["input_ids"])
        start = 0
        while len(buf) - start >= body:
            yield prefix + buf[start:start + body] + suffix
            start += body
            n += 1
            if budget is not None and n >= budget:
                return
        del buf[:start]
    if n == 0:
        raise CaptureError(f"corpus {source} yields no full context of {ctx_len} tokens")
