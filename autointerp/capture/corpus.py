"""Open a corpus of any common kind, stream it, and pack text into fixed-length token contexts.

`open_corpus` checks a path up front and returns a `TextCorpus` (documents: `.txt`, `.jsonl`, Parquet, a
folder saved by Hugging Face `datasets`) or a `TokenCorpus` (pre-tokenised ids: `.npy`, `.safetensors`;
corpus_tokens.py). Either is read a line, a record batch or a block of rows at a time, so memory does not
grow with the corpus. `pack_contexts` cuts documents into contexts of exactly `ctx_len` tokens, so a batch
needs no padding (attention mask all ones) and every context id maps to the same number of stored tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import CaptureError
from .corpus_tokens import TokenCorpus, one_line, open_tokens

TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")
TOKEN_SUFFIXES = (".npy", ".safetensors")
SUFFIXES = TEXT_SUFFIXES + TOKEN_SUFFIXES
KINDS = ("use .txt (a document per line), .jsonl or .parquet (a text column), a folder of .parquet files or one "
         "written by datasets' save_to_disk, or token ids [n_rows, ctx_len] in .npy or .safetensors")
# rows of a Parquet / datasets record batch turned into Python strings at a time
BATCH_ROWS = 1024
_STRING_TYPES = ("string", "large_string", "string_view")
_INSTALL = "pip install datasets (or pip install 'autointerp[corpora]')"

__all__ = ["SUFFIXES", "TextCorpus", "TokenCorpus", "check_corpus_path", "file_sha256", "open_corpus",
           "pack_contexts", "read_corpus", "separator_id", "special_template"]


def check_corpus_path(path: str | Path) -> Path:
    """The corpus path, checked to be a folder or an existing file with a supported extension."""
    p = Path(path)
    if p.is_dir():
        return p
    if p.suffix and p.suffix.lower() not in SUFFIXES:
        raise CaptureError(f"corpus {p}: unsupported extension {p.suffix!r} ({KINDS})")
    if not p.exists():
        raise CaptureError(f"corpus file {p} does not exist")
    if not p.suffix:
        raise CaptureError(f"corpus {p}: unsupported extension '(none)' ({KINDS})")
    return p


def open_corpus(path: str | Path, text_column: str = "text") -> TextCorpus | TokenCorpus:
    """The corpus at `path`, checked as far as can be without reading it all: the path exists and is of a
    supported kind, the text column exists and holds strings (every Parquet file's schema, a datasets folder's
    features, a .jsonl's first record), a token array's header is 2-D integer with rows. CaptureError, one line
    naming the path and what was expected, otherwise. `text_column` is ignored by .txt and token arrays."""
    p = check_corpus_path(path)
    if not text_column:
        raise CaptureError(f"corpus {p}: the text column name is empty")
    if p.is_dir():
        _check_folder(p)
    elif p.suffix.lower() in TOKEN_SUFFIXES:
        return open_tokens(p)
    corpus = TextCorpus(p, text_column)
    form = corpus.format
    if form == "parquet":
        for f in corpus.files():
            _parquet_column(f, text_column)
    elif form == "datasets":
        _load_dataset(p, text_column)
    else:  # a line format: the first document checks the first record
        docs = corpus.documents()
        next(docs, None)
        docs.close()
    return corpus


@dataclass(frozen=True)
class TextCorpus:
    """Documents: lines of a `.txt`, the `text_column` of a `.jsonl`, of a Parquet file or folder of them
    (sorted by name), or of a `datasets` save_to_disk folder. Made by `open_corpus`, which checked it."""

    path: Path
    text_column: str = "text"
    kind: ClassVar[str] = "text"

    @property
    def format(self) -> str:
        """The on-disk format: txt, jsonl, parquet (a file or a folder of them) or datasets."""
        if not self.path.is_dir():
            return self.path.suffix.lower().lstrip(".")
        return "datasets" if (self.path / "state.json").is_file() else "parquet"

    def files(self) -> list[Path]:
        """The files that hold the documents, in reading order."""
        if not self.path.is_dir():
            return [self.path]
        if self.format == "datasets":
            return [self.path / f for f in _dataset_files(self.path)]
        return sorted(self.path.glob("*.parquet"))

    def documents(self) -> Generator[str, None, None]:
        """Yield the documents in order; blank lines and null values skipped."""
        form = self.format
        if form in ("txt", "jsonl"):
            yield from _line_documents(self.path, self.text_column if form == "jsonl" else None)
            return
        if form == "parquet":
            for f in self.files():
                with pq.ParquetFile(f) as pf:
                    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=[self.text_column]):
                        yield from (d for d in batch.column(0).to_pylist() if d is not None)
            return
        ds = _load_dataset(self.path, self.text_column).select_columns([self.text_column])
        for table in ds.with_format("arrow").iter(batch_size=BATCH_ROWS):
            yield from (d for d in table.column(0).to_pylist() if d is not None)

    def fingerprint(self) -> str:
        """sha256 over the format, the text column and the bytes of each file in reading order: equal
        fingerprints mean equal documents."""
        column = self.text_column if self.format != "txt" else ""
        h = hashlib.sha256(f"text-v1|{self.format}|{column}|".encode())
        for f in self.files():
            h.update(bytes.fromhex(file_sha256(f)))
        return h.hexdigest()

    def describe(self) -> str:
        form = self.format
        if form == "txt":
            return f"{self.path}: text, a document per line"
        what = {"jsonl": "JSON lines", "parquet": "Parquet", "datasets": "a datasets folder"}[form]
        if self.path.is_dir():
            what += f" ({len(self.files())} files)"
        return f"{self.path}: {what}, column {self.text_column!r}"


def _parquet_column(path: Path, column: str) -> None:
    """Check one Parquet file's schema holds `column` as strings (reads the footer only)."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as e:
        raise CaptureError(f"corpus {path}: not a readable Parquet file ({one_line(e)})") from None
    if column not in schema.names:
        raise CaptureError(f"corpus {path}: no column {column!r} (columns: {', '.join(schema.names)}); "
                           "pick one with --text-column")
    t = schema.field(column).type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if str(t) not in _STRING_TYPES:
        raise CaptureError(f"corpus {path}: column {column!r} is {t}, expected text (string)")


def _dataset_files(path: Path) -> list[str]:
    """The data files a save_to_disk folder's state.json lists, in order."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        return [d["filename"] for d in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CaptureError(f"corpus {path}: state.json does not list the data files of a datasets folder "
                           f"({one_line(e)})") from None


def _load_dataset(path: Path, column: str):
    """The memory-mapped `datasets.Dataset` saved in `path`, checked to hold `column` as strings."""
    try:
        import datasets
    except ImportError:
        raise CaptureError(f"corpus {path} is a folder saved by Hugging Face datasets; reading it needs the "
                           f"library: {_INSTALL}") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # a damaged folder raises anything from FileNotFoundError to ArrowInvalid
        raise CaptureError(f"corpus {path}: cannot load the datasets folder ({one_line(e)})") from None
    if not isinstance(ds, datasets.Dataset):
        raise CaptureError(f"corpus {path}: a {type(ds).__name__}, expected one split saved as a Dataset")
    if column not in ds.column_names:
        raise CaptureError(f"corpus {path}: no column {column!r} (columns: {', '.join(ds.column_names)}); "
                           "pick one with --text-column")
    dtype = getattr(ds.features[column], "dtype", type(ds.features[column]).__name__)
    if dtype not in _STRING_TYPES:
        raise CaptureError(f"corpus {path}: column {column!r} is {dtype}, expected text (string)")
    return ds


def _check_folder(p: Path) -> None:
    """A folder corpus is a datasets save_to_disk of one split, or holds .parquet files."""
    if (p / "dataset_dict.json").is_file():
        try:
            splits = json.loads((p / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
        except (OSError, ValueError, KeyError, TypeError):
            splits = sorted(d.name for d in p.iterdir() if (d / "state.json").is_file())
        raise CaptureError(f"corpus {p}: a datasets DatasetDict; pass one split's subfolder "
                           f"({', '.join(str(p / s) for s in splits)})")
    if not (p / "state.json").is_file() and not any(p.glob("*.parquet")):
        raise CaptureError(f"corpus {p}: a folder with neither .parquet files nor a datasets save_to_disk "
                           f"(state.json) ({KINDS})")


def read_corpus(path: str | Path, text_column: str = "text") -> Iterator[str]:
    """Yield the documents of a text corpus (see `open_corpus`); CaptureError for token ids."""
    corpus = open_corpus(path, text_column)
    if isinstance(corpus, TokenCorpus):
        raise CaptureError(f"corpus {corpus.path} holds token ids, not text")
    yield from corpus.documents()


def _line_documents(p: Path, column: str | None) -> Iterator[str]:
    """`.txt` (column None): one document per line. `.jsonl`: one JSON object per line whose `column` field (a
    string) is the document. Blank lines skipped; errors name the line number."""
    try:
        with p.open("r", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                if column is None:
                    yield line.rstrip("\r\n")
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CaptureError(f"corpus {p} line {lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict) or column not in obj:
                    fields = f" (fields: {', '.join(map(str, obj))})" if isinstance(obj, dict) else ""
                    raise CaptureError(f"corpus {p} line {lineno}: no {column!r} field{fields}")
                if not isinstance(obj[column], str):
                    raise CaptureError(f"corpus {p} line {lineno}: {column!r} is {type(obj[column]).__name__}, "
                                       "not a string")
                yield obj[column]
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
