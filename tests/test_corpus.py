"""Corpora of every kind `capture` reads, each written in its real layout by the real library (pyarrow, datasets,
numpy, safetensors): what is read back equals what was written, in order; every bad input is one CaptureError
line naming the path; memory stays flat while a large corpus streams."""

import re
import shutil
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import save_file

from autointerp.capture.corpus import (SUFFIXES, TextCorpus, TokenCorpus, check_corpus_path, open_corpus,
                                       read_corpus)
from autointerp.errors import CaptureError

DOCS = ["the first document", "a second, longer document with ünïcode", "third", "fourth one", "fifth"]
TITLES = [f"title {i}" for i in range(len(DOCS))]


def fails(path: Path, match: str, call=None) -> str:
    """The CaptureError that opening `path` (or `call()`) raises: one line naming the path and matching `match`."""
    with pytest.raises(CaptureError) as e:
        call() if call else open_corpus(path)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    assert re.search(match, msg), msg
    return msg


def datasets_lib():
    return pytest.importorskip("datasets")


# -- text: .txt and .jsonl ----------------------------------------------------------------------------------

def test_txt_and_jsonl(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("\n".join(DOCS) + "\n\n")
    c = open_corpus(txt)
    assert isinstance(c, TextCorpus) and c.kind == "text" and c.format == "txt"
    assert list(c.documents()) == DOCS
    assert "\n" not in c.describe() and str(txt) in c.describe()
    jl = tmp_path / "b.jsonl"
    jl.write_text("".join(f'{{"text": {d!r}, "title": {t!r}}}\n'.replace("'", '"') for d, t in zip(DOCS, TITLES)))
    assert list(open_corpus(jl).documents()) == DOCS
    assert list(open_corpus(jl, text_column="title").documents()) == TITLES
    assert list(read_corpus(jl, "title")) == TITLES
    # the column is checked on the first record, up front
    fails(jl, r"line 1: no 'body' field \(fields: text, title\)", lambda: open_corpus(jl, text_column="body"))
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe bad\n")
    fails(tmp_path / "bad.txt", "not UTF-8")


def test_paths_and_kinds(tmp_path):
    assert set(SUFFIXES) == {".txt", ".jsonl", ".parquet", ".npy", ".safetensors"}
    msg = fails(tmp_path / "c.csv", "unsupported extension '.csv'")
    for kind in (".txt", ".jsonl", ".parquet", "save_to_disk", ".npy", ".safetensors"):
        assert kind in msg
    fails(tmp_path / "missing.parquet", "does not exist")
    fails(tmp_path / "missing.npy", "does not exist", lambda: check_corpus_path(tmp_path / "missing.npy"))
    (tmp_path / "noext").write_text("x\n")
    fails(tmp_path / "noext", "unsupported extension '\\(none\\)'")
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", "neither .parquet files nor a datasets save_to_disk")
    (tmp_path / "a.txt").write_text("x\n")
    fails(tmp_path / "a.txt", "empty", lambda: open_corpus(tmp_path / "a.txt", text_column=""))


# -- Parquet --------------------------------------------------------------------------------------------------

def test_parquet_file_streams_in_order(tmp_path):
    docs = DOCS + [None, "after a null"]
    table = pa.table({"id": list(range(len(docs))), "text": docs, "title": TITLES + ["t5", "t6"]})
    p = tmp_path / "c.parquet"
    pq.write_table(table, p, row_group_size=2)
    c = open_corpus(p)
    assert c.format == "parquet" and "column 'text'" in c.describe()
    assert list(c.documents()) == DOCS + ["after a null"]  # nulls skipped
    assert list(open_corpus(p, text_column="title").documents()) == TITLES + ["t5", "t6"]
    fails(p, r"no column 'body' \(columns: id, text, title\)", lambda: open_corpus(p, text_column="body"))
    fails(p, "column 'id' is int64, expected text", lambda: open_corpus(p, text_column="id"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    fails(tmp_path / "junk.parquet", "not a readable Parquet file")
    # large_string and dictionary-encoded columns are text too
    q = tmp_path / "large.parquet"
    pq.write_table(pa.table({"text": pa.array(DOCS, pa.large_string()).dictionary_encode()}), q)
    assert list(open_corpus(q).documents()) == DOCS


def test_parquet_folder_reads_files_in_name_order(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    for name, docs in [("part-2.parquet", ["e"]), ("part-0.parquet", ["a", "b"]), ("part-1.parquet", ["c", "d"])]:
        pq.write_table(pa.table({"text": docs}), folder / name)
    (folder / "_SUCCESS").write_text("")
    c = open_corpus(folder)
    assert c.format == "parquet" and [f.name for f in c.files()] == ["part-0.parquet", "part-1.parquet",
                                                                      "part-2.parquet"]
    assert list(c.documents()) == ["a", "b", "c", "d", "e"]
    assert "3 files" in c.describe()
    pq.write_table(pa.table({"body": ["x"]}), folder / "part-3.parquet")
    fails(folder / "part-3.parquet", r"no column 'text' \(columns: body\)", lambda: open_corpus(folder))


def test_text_fingerprints(tmp_path):
    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": DOCS, "title": TITLES}), p)
    copy = tmp_path / "elsewhere" / "c.parquet"
    copy.parent.mkdir()
    shutil.copy(p, copy)
    fp = open_corpus(p).fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", fp)
    assert open_corpus(copy).fingerprint() == fp  # equal bytes, equal documents, wherever they lie
    assert open_corpus(p, text_column="title").fingerprint() != fp
    pq.write_table(pa.table({"text": DOCS[::-1], "title": TITLES}), copy)
    assert open_corpus(copy).fingerprint() != fp


# -- Hugging Face datasets save_to_disk folders ---------------------------------------------------------------

def test_datasets_folder(tmp_path):
    datasets = datasets_lib()
    docs = DOCS + [None, "last"]
    ds = datasets.Dataset.from_dict({"text": docs, "title": TITLES + ["t5", "t6"], "n": list(range(len(docs)))})
    folder = tmp_path / "saved"
    ds.save_to_disk(str(folder), num_shards=3)
    # the layout datasets writes: state.json lists the shards in order, dataset_info.json the features
    assert (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()
    assert sorted(f.name for f in folder.glob("data-*.arrow")) == [f"data-0000{i}-of-00003.arrow" for i in range(3)]
    c = open_corpus(folder)
    assert isinstance(c, TextCorpus) and c.format == "datasets"
    assert [f.name for f in c.files()] == [f"data-0000{i}-of-00003.arrow" for i in range(3)]
    assert list(c.documents()) == DOCS + ["last"]
    assert list(open_corpus(folder, text_column="title").documents()) == TITLES + ["t5", "t6"]
    assert open_corpus(folder, text_column="title").fingerprint() != c.fingerprint()
    fails(folder, r"no column 'body' \(columns: text, title, n\)", lambda: open_corpus(folder, text_column="body"))
    fails(folder, "column 'n' is int64, expected text", lambda: open_corpus(folder, text_column="n"))


def test_datasets_dict_asks_for_a_split(tmp_path):
    datasets = datasets_lib()
    d = datasets.Dataset.from_dict({"text": DOCS})
    folder = tmp_path / "dd"
    datasets.DatasetDict({"train": d, "test": d.select([0])}).save_to_disk(str(folder))
    assert (folder / "dataset_dict.json").is_file() and (folder / "train" / "state.json").is_file()
    fails(folder, f"DatasetDict; pass one split's subfolder \\({re.escape(str(folder / 'train'))}, "
                  f"{re.escape(str(folder / 'test'))}\\)")
    assert list(open_corpus(folder / "test").documents()) == DOCS[:1]


def test_datasets_missing_library(tmp_path, monkeypatch):
    datasets = datasets_lib()
    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(folder))
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now raises ImportError
    fails(folder, r"saved by Hugging Face datasets.*pip install datasets \(or pip install 'autointerp\[corpora\]'\)")


def test_datasets_damaged_folder(tmp_path):
    datasets = datasets_lib()
    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(folder))
    (folder / "data-00000-of-00001.arrow").write_bytes(b"truncated")
    fails(folder, "cannot load the datasets folder")


# -- pre-tokenised arrays -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64, np.uint64])
def test_npy_rows(tmp_path, dtype):
    ids = np.random.default_rng(0).integers(0, 30_000, size=(50, 16)).astype(dtype)
    p = tmp_path / "tok.npy"
    np.save(p, ids)
    c = open_corpus(p)
    assert isinstance(c, TokenCorpus) and c.kind == "tokens" and (c.n_rows, c.ctx_len) == (50, 16)
    got = c.rows(10, 23)
    assert got.dtype == np.int64 and got.flags.c_contiguous and np.array_equal(got, ids[10:23])
    assert np.array_equal(np.concatenate([c.rows(a, min(a + 7, 50)) for a in range(0, 50, 7)]), ids)
    assert c.rows(5, 5).shape == (0, 16)
    assert c.max_id() == int(ids.max())
    assert "50 pre-tokenised contexts of 16 tokens" in c.describe()
    with pytest.raises(IndexError):
        c.rows(40, 51)


def test_npy_bad(tmp_path):
    for name, arr, match in [("one_d", np.arange(5), r"shape \[5\] \(1-D\)"),
                             ("three_d", np.zeros((2, 3, 4), np.int64), r"shape \[2, 3, 4\] \(3-D\)"),
                             ("float", np.zeros((2, 3), np.float32), "dtype float32"),
                             ("bool", np.zeros((2, 3), bool), "dtype bool"),
                             ("empty", np.zeros((0, 8), np.int64), r"shape \[0, 8\] hold no context"),
                             ("objects", np.array([[{"a": 1}]], dtype=object), "not a readable .npy file")]:
        p = tmp_path / f"{name}.npy"
        np.save(p, arr)
        fails(p, match)
    p = tmp_path / "archive.npy"
    with p.open("wb") as f:
        np.savez(f, a=np.zeros((2, 2), np.int64))
    fails(p, r"an \.npz archive")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    fails(tmp_path / "junk.npy", "not a readable .npy file")
    neg = tmp_path / "neg.npy"
    np.save(neg, np.array([[1, 2], [3, 4], [5, -7]], np.int32))
    c = open_corpus(neg)
    fails(neg, r"row 2 holds a negative token id \(-7\)", c.max_id)
    fails(neg, "row 2 holds a negative token id", lambda: c.rows(1, 3))
    assert c.rows(0, 2).tolist() == [[1, 2], [3, 4]]
    huge = tmp_path / "huge.npy"
    np.save(huge, np.array([[1, 2**63]], np.uint64))
    fails(huge, "a token id past int64", open_corpus(huge).max_id)


def test_safetensors_delphi_layout(tmp_path):
    tokens = np.random.default_rng(1).integers(0, 50_000, size=(40, 32), dtype=np.int64)
    p = tmp_path / "0_255.safetensors"  # delphi's split file: locations, activations and the tokens
    save_file({"locations": np.zeros((7, 3), np.int64), "activations": np.ones(7, np.float32), "tokens": tokens}, p)
    c = open_corpus(p)
    assert isinstance(c, TokenCorpus) and (c.n_rows, c.ctx_len, c.tensor) == (40, 32, "tokens")
    assert np.array_equal(c.rows(3, 17), tokens[3:17]) and c.max_id() == int(tokens.max())
    assert "tensor 'tokens'" in c.describe()
    # no `tokens`: the file's only 2-D integer tensor
    q = tmp_path / "ids.safetensors"
    save_file({"input_ids": tokens[:5].astype(np.int32), "mask": np.ones((5, 32), np.float16)}, q)
    c = open_corpus(q)
    assert c.tensor == "input_ids" and c.rows(0, 5).dtype == np.int64 and np.array_equal(c.rows(0, 5), tokens[:5])
    # fingerprints: the same bytes elsewhere agree; other rows do not
    shutil.copy(p, tmp_path / "copy.safetensors")
    assert open_corpus(tmp_path / "copy.safetensors").fingerprint() == open_corpus(p).fingerprint()
    assert open_corpus(q).fingerprint() != open_corpus(p).fingerprint()


def test_safetensors_bad(tmp_path):
    cases = [("two", {"a": np.zeros((2, 2), np.int64), "b": np.zeros((2, 2), np.int32)},
              r"no tensor 'tokens' and 2 2-D integer tensors.*\(tensors: a \[2, 2\] I64, b \[2, 2\] I32\)"),
             ("none", {"x": np.zeros((2, 2), np.float32)}, "no tensor 'tokens' and 0 2-D integer tensors"),
             ("float", {"tokens": np.zeros((2, 2), np.float32)}, "dtype F32; expected tensor 'tokens'"),
             ("one_d", {"tokens": np.zeros(4, np.int64)}, r"shape \[4\] \(1-D\)"),
             ("empty", {"tokens": np.zeros((0, 4), np.int64)}, r"shape \[0, 4\] hold no context")]
    for name, tensors, match in cases:
        p = tmp_path / f"{name}.safetensors"
        save_file(tensors, p)
        fails(p, match)
    (tmp_path / "junk.safetensors").write_bytes(b"garbage")
    fails(tmp_path / "junk.safetensors", "not a readable .safetensors file")
    neg = tmp_path / "neg.safetensors"
    save_file({"tokens": np.array([[0, 1], [-1, 2]], np.int64)}, neg)
    fails(neg, r"row 1 holds a negative token id \(-1\)", open_corpus(neg).max_id)
    fails(neg, "not text", lambda: list(read_corpus(neg)))


# -- memory stays flat ----------------------------------------------------------------------------------------

N_BIG = 200_000


def _peak_while(fn) -> int:
    """Peak traced Python/numpy memory (bytes) above the start while `fn` runs."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_memory_stays_flat(tmp_path):
    t0 = time.perf_counter()
    # 200k documents of ~100 characters: ~20 MB as Python strings, ~20 MB as one Arrow column
    p = tmp_path / "big.parquet"
    with pq.ParquetWriter(p, pa.schema([("text", pa.string())])) as w:
        for lo in range(0, N_BIG, 20_000):
            w.write_table(pa.table({"text": [f"document {i:06d} " + "x" * 84 for i in range(lo, lo + 20_000)]}))
    arrow_base = pa.total_allocated_bytes()
    arrow_peak = 0

    def read_text():
        nonlocal arrow_peak
        n = 0
        for n, doc in enumerate(open_corpus(p).documents()):
            if n % 1000 == 0:
                assert doc.startswith(f"document {n:06d} ")
                arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - arrow_base)
        assert n == N_BIG - 1

    peak = _peak_while(read_text)
    assert peak < 4 << 20, f"reading Parquet peaked at {peak / 2**20:.1f} MiB of Python memory"
    assert arrow_peak < 8 << 20, f"reading Parquet held {arrow_peak / 2**20:.1f} MiB of Arrow memory"

    # [200k, 64] uint16 token ids: 25.6 MB on disk, 102 MB as int64
    q = tmp_path / "big.npy"
    out = np.lib.format.open_memmap(q, mode="w+", dtype=np.uint16, shape=(N_BIG, 64))
    for lo in range(0, N_BIG, 20_000):
        out[lo:lo + 20_000] = (np.arange(lo, lo + 20_000)[:, None] + np.arange(64)) % 60_000
    out.flush()
    del out

    def read_tokens():
        c = open_corpus(q)
        assert c.max_id() == 59_999
        for lo in range(0, N_BIG, 4096):
            block = c.rows(lo, min(lo + 4096, N_BIG))
            assert block[0, 0] == lo % 60_000 and block[-1, -1] == (lo + len(block) - 1 + 63) % 60_000

    peak = _peak_while(read_tokens)
    assert peak < 8 << 20, f"reading .npy peaked at {peak / 2**20:.1f} MiB"
    assert time.perf_counter() - t0 < 10
