"""Capture throughput, side by side in one run: the model's plain forward pass, the forward pass to the hook
(stopping there), capture without the store (forward + every SAE's encode + the nonzeros copied to the host),
and capture into the store (all of that, the background writer, the final sort and statistics).

    python eval/bench_capture.py cpu [--model minilm|gemma] [--tokens 16384] [--batch-tokens 4096]
    python eval/bench_capture.py gpu [--device cuda] [--models gemma3-270m,gemma2-2b] [--width 65536]

`cpu`: a real model (the bundled all-MiniLM-L6-v2, or Gemma 3 270M from the `[gemma]` extra), a real corpus
(Python's docs, packed once into a token array so no figure includes the tokenizer), random TopK SAEs in
SAELens layout. Prints tokens/s of each, capture / plain forward, a hook early (layer 1) vs late (layer N-1),
and several SAEs in one pass vs one capture per SAE.

`gpu`: models built from their real configs with random weights (no weights need to be at hand: Gemma 3
270M's, and Gemma 2 2B's when it fits), a word-level tokenizer of the model's vocabulary size, a random TopK
SAE of `--width` latents (k 64: a real SAE's L0) at the middle layer, random token ids. Runs the same code on
`--device cpu` with small sizes (how it is tested here). On a GPU machine without duckdb, carry a cp312
duckdb wheel (see /work/.library/device/README.md) and run, from the repo root:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:.
    python3 eval/bench_capture.py gpu --device cuda --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from autointerp.capture import CaptureConfig, capture  # noqa: E402
from autointerp.capture.corpus import open_corpus, pack_contexts  # noqa: E402
from autointerp.capture.device import resolve_device, resolve_dtype, synchronize  # noqa: E402
from autointerp.capture.model import load_model, model_label, resolve_hook, run_hooks  # noqa: E402
from autointerp.capture.plan import Member  # noqa: E402
from autointerp.capture.sae import load_sae  # noqa: E402
from autointerp.capture.stream import DeviceSide  # noqa: E402
from autointerp.store import Store  # noqa: E402

DOCS = ROOT / "autointerp" / "data" / "stdlib_docs.txt"
ROWS: list[dict] = []


def say(name: str, tokens: int, seconds: float, **extra) -> float:
    rate = tokens / seconds
    ROWS.append({"stage": name, "tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(rate, 1),
                 **extra})
    more = "".join(f", {k} {v}" for k, v in extra.items())
    print(f"  {name:<52} {rate:>12,.0f} tok/s  ({seconds:.2f} s{more})", flush=True)
    return rate


def write_sae(folder: Path, d_in: int, width: int, hook: str, k: int = 64, seed: int = 0) -> Path:
    """A random TopK SAE in SAELens v6 layout."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps({
        "architecture": "topk", "k": k, "d_in": d_in, "d_sae": width, "apply_b_dec_to_input": True,
        "normalize_activations": "none", "metadata": {"hook_name": hook}}))
    save_file({"W_enc": torch.randn(d_in, width, generator=g) / d_in ** 0.5, "b_enc": torch.zeros(width),
               "W_dec": torch.randn(width, d_in, generator=g) / d_in ** 0.5, "b_dec": torch.zeros(d_in)},
              str(folder / "sae_weights.safetensors"))
    return folder


def batches(ids: np.ndarray, batch_tokens: int):
    b = max(1, batch_tokens // ids.shape[1])
    return [ids[i:i + b] for i in range(0, len(ids), b)]


@torch.no_grad()
def time_forward(net, parts, device, stop_at=None) -> float:
    """Seconds for the base model's forward pass over every batch (to `stop_at` hook points if given)."""
    base = getattr(net, "base_model", net)
    t = time.perf_counter()
    for ids in parts:
        x = torch.as_tensor(ids, device=device)
        if stop_at is None:
            base(input_ids=x, attention_mask=torch.ones_like(x))
        else:
            run_hooks(net, stop_at, x)
    synchronize(device)
    return time.perf_counter() - t


@torch.no_grad()
def time_device_side(net, members, parts, device, special) -> tuple[float, int]:
    side = DeviceSide(net, members, device, 0.0, special)
    t, n = time.perf_counter(), 0
    for i, ids in enumerate(parts):
        batch, k = side.run(i, ids)
        batch.host()  # waits for the copy: what the writer thread would do
        n += k
    synchronize(device)
    return time.perf_counter() - t, n


def store_capture(tmp: Path, model: Path, corpus: Path, saes: list[str], batch_tokens: int, device: str,
                  dtype: str = "auto", name: str = "s") -> tuple[float, int]:
    """(seconds, nonzeros) of a capture into a new store: the loop and the final sort and statistics (the
    model load is not counted); the loop alone is printed beside it."""
    with Store(tmp / f"{name}.duckdb") as s:
        r = capture(s, CaptureConfig(model=model, corpus=corpus, saes=tuple(saes), batch_tokens=batch_tokens,
                                     device=device, dtype=dtype, outputs=False))
    (tmp / f"{name}.duckdb").unlink()
    print(f"    ({name}: loop {r.loop_seconds:.2f} s = {r.tokens / r.loop_seconds:,.0f} tok/s, then "
          f"{r.seconds - r.loop_seconds:.2f} s to sort {r.nonzeros:,} rows into place)", flush=True)
    return r.seconds, r.nonzeros


def cpu(a) -> None:
    torch.set_num_threads(a.threads or torch.get_num_threads())
    device = torch.device("cpu")
    if a.model == "gemma":
        from autointerp.demo import MODELS

        model = MODELS["gemma-3-270m"].folder(False)
    else:
        from autointerp.capture.model import bundled_model_path

        model = bundled_model_path()
    net, tok = load_model(model)
    layers = net.base_model.layers if hasattr(net.base_model, "layers") else net.base_model.encoder.layer
    n_layers = len(layers)
    prefix = "model.layers" if hasattr(net.base_model, "layers") else "encoder.layer"
    d = net.config.hidden_size
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp_:
        tmp = Path(tmp_)
        rows = list(pack_contexts(tok, open_corpus(DOCS).documents(), a.ctx_len, a.tokens))
        ids = np.asarray(rows, dtype=np.int64)
        np.save(tmp / "corpus.npy", ids)
        tokens = ids.size
        parts = batches(ids, a.batch_tokens)
        late, early = f"{prefix}.{n_layers - 2}", f"{prefix}.1"
        sae_late = write_sae(tmp / "late", d, a.width, late)
        sae_early = write_sae(tmp / "early", d, a.width, early, seed=1)
        special = np.array(sorted(tok.all_special_ids), dtype=np.int64)
        print(f"cpu: {model_label(model)} ({n_layers} layers, d {d}), {tokens:,} tokens in contexts of {a.ctx_len}, "
              f"batches of {a.batch_tokens} tokens, TopK SAEs of {a.width} latents (k 64), "
              f"{torch.get_num_threads()} torch threads", flush=True)
        time_forward(net, parts[:1], device)  # warm up
        plain = say("plain forward (whole base model)", tokens, time_forward(net, parts, device))
        say(f"forward to {late} (stops there)", tokens,
            time_forward(net, parts, device, [resolve_hook(net, late)]))
        m = Member("late", "sae", resolve_hook(net, late), load_sae(sae_late), a.width)
        secs, nz = time_device_side(net, [m], parts, device, special)
        without = say(f"capture without the store ({late})", tokens, secs, nonzeros=nz)
        secs, nz = store_capture(tmp, model, tmp / "corpus.npy", [str(sae_late)], a.batch_tokens, "cpu")
        into = say(f"capture into the store ({late})", tokens, secs, nonzeros=nz)
        secs, _ = store_capture(tmp, model, tmp / "corpus.npy", [str(sae_early)], a.batch_tokens, "cpu", name="e")
        early_rate = say(f"capture into the store ({early})", tokens, secs)
        print(f"  capture / plain forward: {without / plain:.2f}x without the store, {into / plain:.2f}x into it "
              f"(target >= 0.8x); hook at layer 1 vs {n_layers - 2} of {n_layers}: {early_rate / into:.2f}x",
              flush=True)
        hooks = [f"{prefix}.{i}" for i in np.linspace(1, n_layers - 2, 4).astype(int)]
        saes = [str(write_sae(tmp / f"sae{i}", d, a.width, h, seed=10 + i)) for i, h in enumerate(hooks)]
        one_pass, _ = store_capture(tmp, model, tmp / "corpus.npy", saes, a.batch_tokens, "cpu", name="many")
        separate = sum(store_capture(tmp, model, tmp / "corpus.npy", [s], a.batch_tokens, "cpu", name=f"one{i}")[0]
                       for i, s in enumerate(saes))
        say(f"{len(saes)} SAEs in one pass ({', '.join(hooks)})", tokens, one_pass)
        say(f"{len(saes)} captures of one SAE each", tokens * len(saes), separate)
        print(f"  {len(saes)} SAEs: one pass takes {one_pass / separate:.2f}x the time of {len(saes)} captures",
              flush=True)
        ROWS.append({"ratio_capture_vs_forward": round(into / plain, 3), "ratio_without_store": round(without / plain, 3),
                     "early_vs_late": round(early_rate / into, 3), "one_pass_vs_separate": round(one_pass / separate, 3)})


GPU_MODELS = {
    # Gemma 3 270M's and Gemma 2 2B's published configs (hidden size, layers, heads, vocabulary)
    "gemma3-270m": ("Gemma3TextConfig", "Gemma3ForCausalLM",
                    dict(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                         num_attention_heads=4, num_key_value_heads=1, head_dim=256, max_position_embeddings=32768,
                         sliding_window=512, rope_theta=1_000_000.0, query_pre_attn_scalar=256)),
    "gemma2-2b": ("Gemma2Config", "Gemma2ForCausalLM",
                  dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256, max_position_embeddings=8192,
                       sliding_window=4096, query_pre_attn_scalar=256)),
}


def build_model(name: str, folder: Path, dtype: torch.dtype, device: torch.device) -> Path:
    """A model of `name`'s real config with random weights, saved with a word-level tokenizer of its vocabulary."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    cfg_cls, model_cls, kw = GPU_MODELS[name]
    config = getattr(transformers, cfg_cls)(**kw)
    torch.manual_seed(0)
    with device:  # random weights made where they will run: seconds on a GPU, not minutes on its host
        net = getattr(transformers, model_cls)(config).to(dtype)
    net.save_pretrained(folder)
    del net
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    vocab.update({f"<t{i}>": i for i in range(4, kw["vocab_size"])})
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                         unk_token="<unk>").save_pretrained(folder)
    return folder


def gpu(a) -> None:
    device = resolve_device(a.device)
    dtype = resolve_dtype(a.dtype, device)
    for name in a.models.split(","):
        with tempfile.TemporaryDirectory(dir=a.tmp) as tmp_:
            tmp = Path(tmp_)
            t = time.perf_counter()
            try:
                folder = build_model(name, tmp / name, dtype, device)
            except (RuntimeError, MemoryError) as e:
                print(f"{name}: could not build ({str(e).splitlines()[0]})", flush=True)
                continue
            net, tok = load_model(folder, device=device, dtype=dtype)
            kw = GPU_MODELS[name][2]
            hook = f"model.layers.{kw['num_hidden_layers'] // 2}"
            sae = write_sae(tmp / "sae", kw["hidden_size"], a.width, hook)
            rng = np.random.default_rng(0)
            n_ctx = max(1, a.tokens // a.ctx_len)
            ids = rng.integers(4, kw["vocab_size"], size=(n_ctx, a.ctx_len), dtype=np.int64)
            np.save(tmp / "corpus.npy", ids)
            parts, tokens = batches(ids, a.batch_tokens), ids.size
            print(f"{name} on {device} ({dtype}): built and loaded in {time.perf_counter() - t:.0f} s; "
                  f"{tokens:,} random tokens in contexts of {a.ctx_len}, batches of {a.batch_tokens}; TopK SAE "
                  f"{a.width} latents (k 64) at {hook}", flush=True)
            time_forward(net, parts[:2], device)  # warm up (kernels, allocator)
            plain = say(f"{name}: plain forward (whole base model)", tokens, time_forward(net, parts, device))
            m = Member("sae", "sae", resolve_hook(net, hook), load_sae(sae).to(device=device), a.width)
            time_device_side(net, [m], parts[:2], device, np.array([0, 1, 2, 3]))
            secs, nz = time_device_side(net, [m], parts, device, np.array([0, 1, 2, 3]))
            without = say(f"{name}: capture without the store", tokens, secs, nonzeros=nz)
            del net
            if device.type == "cuda":
                torch.cuda.empty_cache()
            secs, nz = store_capture(tmp, folder, tmp / "corpus.npy", [str(sae)], a.batch_tokens, str(device),
                                     a.dtype)
            into = say(f"{name}: capture into the store", tokens, secs, nonzeros=nz)
            print(f"  {name}: capture / plain forward {without / plain:.2f}x without the store, {into / plain:.2f}x "
                  "into it (target on one H100: >= 0.8x into the store)", flush=True)
            ROWS.append({"model": name, "device": str(device), "ratio_into_store": round(into / plain, 3),
                         "ratio_without_store": round(without / plain, 3)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("cpu")
    c.add_argument("--model", choices=("minilm", "gemma"), default="minilm")
    c.add_argument("--tokens", type=int, default=16_384)
    c.add_argument("--ctx-len", type=int, default=64)
    c.add_argument("--batch-tokens", type=int, default=4096)
    c.add_argument("--width", type=int, default=4096)
    c.add_argument("--threads", type=int, default=0)
    g = sub.add_parser("gpu")
    g.add_argument("--device", default="auto")
    g.add_argument("--dtype", default="auto")
    g.add_argument("--models", default="gemma3-270m,gemma2-2b")
    g.add_argument("--width", type=int, default=65_536)
    g.add_argument("--tokens", type=int, default=1 << 20)
    g.add_argument("--ctx-len", type=int, default=1024)
    g.add_argument("--batch-tokens", type=int, default=32_768)
    for p in (c, g):
        p.add_argument("--tmp", type=Path, default=None, help="where temporary models and stores go")
        p.add_argument("--out", type=Path, default=None, help="write the figures as JSON into this folder")
    a = ap.parse_args()
    (cpu if a.mode == "cpu" else gpu)(a)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / f"bench_capture_{a.mode}.json").write_text(json.dumps(ROWS, indent=1))


if __name__ == "__main__":
    main()
