import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file, save_file

from autointerp.errors import IngestError
from autointerp.ingest import TokenStrings, ingest_delphi, ingest_parquet, load_tokenizer


def _all_rows(store, did, width):
    r = store.activations.read_activations(did, 0, width - 1)
    return r["feature"].astype(np.int64), r["context_id"].astype(np.int64), r["position"].astype(np.int64), r["value"]


def test_delphi_round_trip(store, delphi_cache, minilm):
    folder, facts = delphi_cache()
    [summary] = ingest_delphi(store, folder)
    assert summary["nonzeros"] == facts["nonzeros"] and summary["width"] == 256
    d = store.dictionary()
    assert (d.name, d.kind, d.hook, d.model) == ("layers.3", "delphi", "layers.3", str(minilm))
    f, c, p, v = _all_rows(store, d.dictionary_id, d.width)
    # every nonzero of the shards, exactly once, clustered by (feature, context, position)
    got = np.stack([f, c, p])
    want = np.stack([facts["feature"], facts["seq"], facts["pos"]])
    want = want[:, np.lexsort(want[::-1])]
    assert np.array_equal(got, want)
    ref = {(a, b, e): val for a, b, e, val in zip(facts["feature"], facts["seq"], facts["pos"],
                                                   facts["value"].astype(np.float16).astype(np.float32))}
    assert all(ref[(a, b, e)] == val for a, b, e, val in zip(f[:500], c[:500], p[:500], v[:500]))
    # statistics against an independent computation
    stats = {s.feature: s for s in store.activations.feature_stats(d.dictionary_id)}
    for feat in (5, 17, 100):
        vals = v[f == feat].astype(np.float64)
        s = stats[feat]
        assert s.n_firing == len(vals) and s.max_value == pytest.approx(vals.max())
        assert s.mean_value == pytest.approx(vals.mean())
        assert s.density == pytest.approx(len(vals) / facts["tokens"].size)
        assert s.n_contexts == len(np.unique(c[f == feat]))
        assert np.allclose(s.quantile_edges, np.quantile(vals, np.arange(1, 10) / 10), rtol=1e-5)
    assert stats[200].n_firing == 0 and stats[201].n_firing == 0
    # token strings come from the tokenizer named in config.json
    strings = TokenStrings(load_tokenizer(minilm), "m")
    ctx = store.activations.read_contexts(d.corpus_id, np.array([7]), with_strings=True)
    assert ctx["token_ids"].tolist() == facts["tokens"][7].tolist()
    assert ctx["tokens"] == strings(facts["tokens"][7:8])[0]


def test_delphi_uint32_float32_and_several_hookpoints(store, delphi_cache):
    a, fa = delphi_cache("layers.2", n_seq=2**16 + 10, ctx_len=2, width=64, l0=1, n_splits=2,
                         act_dtype=np.float32, n_token_features=0, dead=())
    b, fb = delphi_cache("layers.4", n_seq=2**16 + 10, ctx_len=2, width=32, l0=1, n_splits=1, seed=0,
                         n_token_features=0, dead=())
    assert load_file(str(a / "0_31.safetensors"))["locations"].dtype == np.uint32  # sequences >= 2**16
    out = ingest_delphi(store, a.parent)
    assert [o["dictionary"] for o in out] == ["layers.2", "layers.4"]
    assert out[0]["corpus_created"] and not out[1]["corpus_created"]  # same tokens: one corpus
    assert store.query("SELECT count(*) FROM corpora").fetchone()[0] == 1
    assert out[0]["nonzeros"] == fa["nonzeros"] and out[1]["nonzeros"] == fb["nonzeros"]


def test_delphi_tokenizer_option_and_missing_tokenizer(store, delphi_cache, minilm):
    folder, _ = delphi_cache(model_name="EleutherAI/pythia-70m")
    with pytest.raises(IngestError, match="pass --tokenizer DIR"):
        ingest_delphi(store, folder)
    [out] = ingest_delphi(store, folder, tokenizer=str(minilm), dictionary="mine")
    assert out["dictionary"] == "mine"


def test_delphi_big_shards_are_read_in_latent_ranges(store, delphi_cache, monkeypatch):
    """A shard of more than SHARD_ROWS rows is read in parts, each a range of its latents, and a shard
    wider than 2^16 latents is sorted by radix in two halves: the store holds the same rows either way."""
    from autointerp.ingest import delphi

    folder, facts = delphi_cache(width=140_000, n_seq=60, l0=8, n_splits=2, dead=(139_998, 139_999))
    [whole] = ingest_delphi(store, folder, dictionary="whole")
    monkeypatch.setattr(delphi, "SHARD_ROWS", 1_000)
    monkeypatch.setattr(delphi, "BLOCK_ROWS", 777)
    [parts] = ingest_delphi(store, folder, dictionary="parts")
    assert whole["nonzeros"] == parts["nonzeros"] == facts["nonzeros"]
    a, b = (store.dictionary(n).dictionary_id for n in ("whole", "parts"))
    for x, y in zip(_all_rows(store, a, 140_000), _all_rows(store, b, 140_000)):
        assert np.array_equal(x, y)
    want = np.stack([facts["feature"], facts["seq"], facts["pos"]])
    assert np.array_equal(np.stack(_all_rows(store, b, 140_000)[:3]), want[:, np.lexsort(want[::-1])])
    assert [s.n_firing for s in store.activations.feature_stats(a)] == [s.n_firing for s in store.activations.feature_stats(b)]


def _corrupt(folder, kind):
    shard = sorted(folder.glob("*.safetensors"))[1]
    data = load_file(str(shard))
    if kind == "truncated":
        raw = shard.read_bytes()
        shard.write_bytes(raw[: len(raw) // 2])
    elif kind == "garbage":
        shard.write_bytes(b"\x00" * 64)
    elif kind == "nan":
        data["activations"][3] = np.nan
        save_file(data, str(shard))
    elif kind == "inf":
        data["activations"][0] = np.inf
        save_file(data, str(shard))
    elif kind == "length":
        data["activations"] = data["activations"][:-1]
        save_file(data, str(shard))
    elif kind == "tokens_differ":
        data["tokens"] = data["tokens"].copy()
        data["tokens"][0, 0] += 1
        save_file(data, str(shard))
    elif kind == "tokens_shape":
        data["tokens"] = data["tokens"][:, :32].copy()
        save_file(data, str(shard))
    elif kind == "latent_range":
        data["locations"][0, 2] = 999
        save_file(data, str(shard))
    elif kind == "sequence_range":
        data["locations"][0, 0] = 5000
        save_file(data, str(shard))
    elif kind == "position_range":
        data["locations"][0, 1] = 64
        save_file(data, str(shard))
    elif kind == "token_vocab":
        for s in folder.glob("*.safetensors"):
            d = load_file(str(s))
            d["tokens"][1, 1] = 10**6
            save_file(d, str(s))
    elif kind == "overlap":
        start, end = map(int, shard.stem.split("_"))
        shard.rename(shard.with_name(f"{start - 1}_{end}.safetensors"))
    elif kind == "config_ctx":
        cfg = json.loads((folder / "config.json").read_text())
        cfg["cache_ctx_len"] = 128
        (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("kind,message", [
    ("truncated", "corrupt or truncated safetensors"),
    ("garbage", "corrupt or truncated safetensors"),
    ("nan", "NaN or Inf"),
    ("inf", "NaN or Inf"),
    ("length", "activations has shape"),
    ("tokens_differ", "tokens differ"),
    ("tokens_shape", "disagree on the tokens shape"),
    ("latent_range", "latent offset 999 out of range"),
    ("sequence_range", "context id 5000 out of range"),
    ("position_range", "token position 64 out of range"),
    ("token_vocab", "token id 1000000 out of range"),
    ("overlap", "overlap"),
    ("config_ctx", "cache_ctx_len=128"),
])
def test_delphi_bad_input_leaves_store_unchanged(store, delphi_cache, kind, message):
    good, _ = delphi_cache("good", seed=1)
    ingest_delphi(store, good)
    before = store.content_digest()
    bad, _ = delphi_cache("bad", seed=2)
    _corrupt(bad, kind)
    with pytest.raises(IngestError, match=message):
        ingest_delphi(store, bad)
    assert store.content_digest() == before


def _parquet(tmp_path, acts: dict, contexts: dict | None = None):
    folder = tmp_path / "pq"
    folder.mkdir(exist_ok=True)
    contexts = contexts or {"context_id": [1, 0], "token_ids": [[5, 6, 7], [1, 2, 3, 4]],
                            "tokens": [[" e", " f", " g"], [" a", " b", " c", " d"]]}
    pq.write_table(pa.table(contexts), folder / "contexts.parquet")
    pq.write_table(pa.table(acts), folder / "activations.parquet")
    return folder


def test_parquet_round_trip(store, tmp_path):
    folder = _parquet(tmp_path, {"feature": [3, 0, 3, 1], "context_id": [1, 0, 0, 1], "position": [2, 3, 0, 0],
                                 "value": [1.5, 2.0, 0.25, 0.0]})
    (folder / "dictionary.json").write_text(json.dumps({"model": "m", "hook": "h", "width": 8}))
    out = ingest_parquet(store, folder, dictionary="ext")
    assert out["nonzeros"] == 3  # the explicit zero is dropped
    d = store.dictionary("ext")
    assert (d.width, d.model, d.hook) == (8, "m", "h")
    r = store.activations.read_activations(d.dictionary_id, 0, 7)
    assert list(zip(r["feature"].tolist(), r["context_id"].tolist(), r["position"].tolist())) == \
        [(0, 0, 3), (3, 0, 0), (3, 1, 2)]
    assert store.activations.context_lengths(d.corpus_id).tolist() == [4, 3]  # contexts of different lengths


@pytest.mark.parametrize("acts,contexts,message", [
    ({"feature": [0], "context_id": [0], "value": [1.0]}, None, "missing column"),
    ({"feature": [0], "context_id": [2], "position": [0], "value": [1.0]}, None, "context id 2 out of range"),
    ({"feature": [0], "context_id": [1], "position": [3], "value": [1.0]}, None, "position 3 out of range"),
    ({"feature": [0], "context_id": [0], "position": [0], "value": [float("nan")]}, None, "NaN or Inf"),
    ({"feature": [-1], "context_id": [0], "position": [0], "value": [1.0]}, None, "feature id -1 out of range"),
    ({"feature": [0, 0], "context_id": [0, 0], "position": [1, 1], "value": [1.0, 2.0]}, None, "duplicate"),
    ({"feature": [0], "context_id": [0], "position": [0], "value": [1.0]},
     {"context_id": [0, 2], "token_ids": [[1], [2]], "tokens": [["a"], ["b"]]}, "dense"),
])
def test_parquet_bad_input(store, tmp_path, acts, contexts, message):
    before = store.content_digest()
    folder = _parquet(tmp_path, acts, contexts)
    with pytest.raises(IngestError, match=message):
        ingest_parquet(store, folder, dictionary="ext", width=4)
    assert store.content_digest() == before
