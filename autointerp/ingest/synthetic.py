"""Write a synthetic delphi latent cache in delphi's exact on-disk format, for tests and benchmarks.

Feature popularity follows a power law (like real SAE latents: a few dense, a long sparse tail);
each token gets about `l0` latents. Features `0..n_token_features-1` are token detectors: feature i
fires (strongly) exactly where the token `trigger_ids[i]` occurs, so a sampler's output can be checked
against a known meaning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


@dataclass(frozen=True)
class SyntheticCache:
    """What a synthetic cache holds: `n_seq` sequences of `ctx_len` tokens drawn from `vocab` (token ids
    [low, high)), `width` features with about `l0` firing per token, written as `n_splits` shards;
    `n_token_features` token detectors, `dead` features that never fire; `model_name` goes in the config."""

    n_seq: int
    ctx_len: int
    width: int
    l0: int
    n_splits: int = 4
    vocab: tuple[int, int] = (1000, 29000)
    model_name: str = ""
    seed: int = 0
    n_token_features: int = 0
    dead: tuple[int, ...] = ()
    act_dtype: type = np.float16


def write_delphi_cache(folder: str | Path, spec: SyntheticCache, *, arrays: bool = True,
                       block_tokens: int = 1 << 19) -> dict:
    """Create `folder/config.json` and `<start>_<end>.safetensors` shards. Returns facts for checking:
    the tokens, the trigger ids, the count of nonzeros and (unless `arrays` is False, for a cache too big
    to hold) every nonzero's feature, sequence, position and value, in (token, feature) order.

    Written `block_tokens` tokens at a time, each block's rows appended to per-shard spill files that
    become the shards at the end: memory is one block's draws plus the largest shard, whatever the
    corpus size. The output does not depend on `block_tokens`: each block draws its features, values
    and detector values from its own place in the streams that one draw of everything would use.
    """
    n_seq, ctx_len, width, l0, n_splits = spec.n_seq, spec.ctx_len, spec.width, spec.l0, spec.n_splits
    vocab, n_token_features = spec.vocab, spec.n_token_features
    rng = np.random.default_rng(spec.seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokens = rng.integers(vocab[0], vocab[1], size=(n_seq, ctx_len), dtype=np.int64)
    n_tok = n_seq * ctx_len
    trigger_ids = rng.choice(np.arange(vocab[0], vocab[1]), size=n_token_features, replace=False)
    # background: l0 draws per token from a power-law over features (duplicates collapse); as
    # `rng.choice(width, n_tok * l0, p=pop)`, which is a search of one uniform double per draw in the CDF
    pop = 1.0 / np.arange(1, width + 1) ** 0.7
    pop[list(spec.dead)] = 0
    pop[:n_token_features] = 0
    pop /= pop.sum()
    cdf = pop.cumsum()
    cdf /= cdf[-1]
    # the values' stream starts where the draws' ends (a double takes one 64-bit step of PCG64)
    value_rng = _fork(rng, advance=n_tok * l0)
    # token detectors: (feature i, every token equal to trigger i), valued 5 + U(0, 1) from the stream
    # after all the background values (the exponential's steps vary, so it is walked to its end)
    det_hits = [np.flatnonzero(tokens.ravel() == tid) for tid in trigger_ids]
    det_feat = np.concatenate([np.full(len(t), i, np.int64) for i, t in enumerate(det_hits)] or [np.zeros(0, np.int64)])
    det_tok = np.concatenate(det_hits or [np.zeros(0, np.int64)])
    det_val = np.zeros(0, np.float32)
    if n_token_features:
        walk = _fork(value_rng)
        for i in range(0, n_tok * l0, block_tokens * l0):
            walk.exponential(1.0, size=min(block_tokens * l0, n_tok * l0 - i))
        det_val = 5.0 + walk.random(len(det_tok)).astype(np.float32)
    bounds = np.linspace(0, width, n_splits + 1).astype(np.int64)
    spill = [(folder / f".{a}_{b - 1}.locations.tmp", folder / f".{a}_{b - 1}.activations.tmp")
             for a, b in zip(bounds[:-1], bounds[1:])]
    kept: list[tuple] = []
    nonzeros = 0
    try:
        files = [(open(lp, "wb"), open(ap, "wb")) for lp, ap in spill]
        try:
            for t0 in range(0, n_tok, block_tokens):
                t1 = min(t0 + block_tokens, n_tok)
                feat, flat_tok, vals = _draw_block(rng, value_rng, cdf, t0, t1, l0, width, (det_tok, det_feat, det_val))
                seq, pos = flat_tok // ctx_len, flat_tok % ctx_len
                nonzeros += len(feat)
                cut = np.searchsorted(bounds, feat, side="right") - 1
                for s, (lf, af) in enumerate(files):
                    m = cut == s
                    np.stack([seq[m], pos[m], feat[m] - bounds[s]], axis=1).astype(np.uint32).tofile(lf)
                    vals[m].astype(spec.act_dtype).tofile(af)
                if arrays:
                    kept.append((feat, seq, pos, vals))
        finally:
            for lf, af in files:
                lf.close()
                af.close()
        _shards_from_spill(folder, bounds, spill, tokens, spec.act_dtype)
    finally:
        for lp, ap in spill:
            lp.unlink(missing_ok=True)
            ap.unlink(missing_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "dataset_repo": "synthetic", "dataset_split": "train", "dataset_name": "", "dataset_column": "text",
        "batch_size": 8, "cache_ctx_len": ctx_len, "n_tokens": n_tok, "n_splits": n_splits,
        "model_name": spec.model_name}))
    facts = {"tokens": tokens, "trigger_ids": trigger_ids, "nonzeros": nonzeros}
    if arrays:
        for k, parts in zip(("feature", "seq", "pos", "value"), zip(*kept) if kept else ([],) * 4):
            facts[k] = np.concatenate(parts) if parts else np.zeros(0, np.float32 if k == "value" else np.int64)
    return facts


def _draw_block(rng, value_rng, cdf: np.ndarray, t0: int, t1: int, l0: int, width: int,
                detectors: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Tokens t0..t1-1: their background draws and the token detectors' rows among them, one activation per
    (token, feature) (the first draw kept): (feature, token, value) in (token, feature) order, which is
    delphi's (sequence, position) order within a shard."""
    det_tok, det_feat, det_val = detectors
    feat = cdf.searchsorted(rng.random((t1 - t0) * l0), side="right")
    vals = value_rng.exponential(1.0, size=len(feat)).astype(np.float32)
    flat_tok = np.repeat(np.arange(t0, t1, dtype=np.int64), l0)
    here = (det_tok >= t0) & (det_tok < t1)
    if here.any():
        feat = np.concatenate([feat, det_feat[here]])
        flat_tok = np.concatenate([flat_tok, det_tok[here]])
        vals = np.concatenate([vals, det_val[here]])
    key, first = np.unique(flat_tok * width + feat, return_index=True)
    return key % width, key // width, vals[first]


def _shards_from_spill(folder: Path, bounds: np.ndarray, spill: list[tuple[Path, Path]], tokens: np.ndarray,
                       act_dtype) -> None:
    """Each shard's spilled rows as `<start>_<end>.safetensors` (uint16 locations when they fit, as delphi)."""
    for (start, stop), (lp, ap) in zip(zip(bounds[:-1], bounds[1:]), spill):
        loc = np.fromfile(lp, dtype=np.uint32).reshape(-1, 3)
        small = loc[:, 2].max(initial=0) < 2**16 and loc[:, 0].max(initial=0) < 2**16
        save_file({"locations": loc.astype(np.uint16) if small else loc,
                   "activations": np.fromfile(ap, dtype=act_dtype), "tokens": tokens},
                  str(folder / f"{start}_{stop - 1}.safetensors"))
        del loc


def _fork(rng: np.random.Generator, advance: int = 0) -> np.random.Generator:
    """A generator at `rng`'s state (moved on `advance` 64-bit steps); `rng` itself is left as it was."""
    src = rng.bit_generator
    if not isinstance(src, np.random.PCG64):  # the state copied below is a PCG64's (np.random.default_rng's)
        raise TypeError(f"a PCG64 generator is needed, not {type(src).__name__}")
    bits = np.random.PCG64()
    bits.state = src.state
    if advance:
        bits.advance(advance)
    return np.random.Generator(bits)


def add_retrained_copy(store, dictionary, name: str, *, seed: int = 0, drop: float = 0.05, extra: float = 0.05,
                       noise: float = 0.2, direction_noise: float = 0.5, chunk: int = 4_000_000) -> np.ndarray:
    """A stand-in for a retrained SAE: dictionary `name` over the same corpus whose feature `perm[f]` is
    feature f of `dictionary`, with a share `drop` of its firings removed, `extra` x as many spurious ones
    added at random tokens, and every value scaled by a factor uniform in 1 +- `noise`; its output
    directions (when `dictionary` has them) moved alike, plus Gaussian noise of `direction_noise` x their norm. Returns `perm`
    (the true partner of new feature perm[f] is f). One transaction; reads a feature range at a time."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(dictionary.width)
    lengths = store.activations.context_lengths(dictionary.corpus_id)
    with store.transaction() as w:
        b = w.activations.add_dictionary(name=name, corpus_id=dictionary.corpus_id, model=dictionary.model,
                             hook=dictionary.hook, width=dictionary.width, kind="external",
                             source=f"retrained copy of {dictionary.name} (seed {seed})", sorted_input=False)
        feats = np.arange(dictionary.width)
        for part in store.activations.plan_chunks(dictionary.dictionary_id, feats, chunk):
            t = store.activations.read_activations(dictionary.dictionary_id, int(part[0]), int(part[-1]))
            f, c, p, v = (np.asarray(t[k]) for k in ("feature", "context_id", "position", "value"))
            keep = rng.random(len(f)) >= drop
            f, c, p, v = f[keep], c[keep], p[keep], v[keep].astype(np.float32)
            v = v * rng.uniform(1 - noise, 1 + noise, len(v)).astype(np.float32)
            n = rng.binomial(len(f), extra) if len(f) else 0
            if n:  # spurious firings of the same features, at random tokens, weak
                ef = f[rng.integers(0, len(f), n)]
                ec = rng.integers(0, len(lengths), n)
                ep = (rng.random(n) * lengths[ec]).astype(np.int64)
                ev = (np.abs(v).mean() * rng.uniform(0.05, 0.3, n)).astype(np.float32)
                span = np.int64(len(lengths)) * int(lengths.max())  # cell key: feature, then token
                key = f.astype(np.int64) * span + c.astype(np.int64) * int(lengths.max()) + p
                ekey = ef.astype(np.int64) * span + ec * int(lengths.max()) + ep
                _, first = np.unique(ekey, return_index=True)
                new = first[~np.isin(ekey[first], key)]
                f, c, p, v = (np.concatenate([x, y[new].astype(x.dtype)]) for x, y in ((f, ef), (c, ec), (p, ep),
                                                                                        (v, ev)))
            b.append(perm[f], c, p, v)
        b.finish()
        if store.activations.direction_dim(dictionary.dictionary_id):  # its output directions, moved and perturbed alike
            _, va = store.activations.directions(dictionary.dictionary_id)
            vb = np.empty_like(va)
            scale = np.linalg.norm(va.astype(np.float32), axis=1, keepdims=True) / np.sqrt(va.shape[1])
            vb[perm] = va + (direction_noise * scale * rng.standard_normal(va.shape)).astype(np.float16)
            w.activations.add_directions(b.dictionary_id, vb)
    return perm
