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


def write_delphi_cache(folder: str | Path, spec: SyntheticCache) -> dict:
    """Create `folder/config.json` and `<start>_<end>.safetensors` shards. Returns facts for checking."""
    n_seq, ctx_len, width, l0, n_splits = spec.n_seq, spec.ctx_len, spec.width, spec.l0, spec.n_splits
    vocab, model_name, n_token_features, dead = spec.vocab, spec.model_name, spec.n_token_features, spec.dead
    act_dtype, seed = spec.act_dtype, spec.seed
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokens = rng.integers(vocab[0], vocab[1], size=(n_seq, ctx_len), dtype=np.int64)
    n_tok = n_seq * ctx_len
    trigger_ids = rng.choice(np.arange(vocab[0], vocab[1]), size=n_token_features, replace=False)
    # background: l0 draws per token from a power-law over features (duplicates collapse)
    pop = 1.0 / np.arange(1, width + 1) ** 0.7
    pop[list(dead)] = 0
    pop[:n_token_features] = 0
    pop /= pop.sum()
    flat_tok = np.repeat(np.arange(n_tok, dtype=np.int64), l0)
    feat = rng.choice(width, size=n_tok * l0, p=pop)
    vals = rng.exponential(1.0, size=len(feat)).astype(np.float32)
    # token detectors
    tf, tt = [], []
    for i, tid in enumerate(trigger_ids):
        where = np.flatnonzero(tokens.ravel() == tid)
        tf.append(np.full(len(where), i))
        tt.append(where)
    if n_token_features:
        feat = np.concatenate([feat] + tf)
        flat_tok = np.concatenate([flat_tok] + tt)
        vals = np.concatenate([vals, 5.0 + rng.random(sum(len(x) for x in tt)).astype(np.float32)])
    # one activation per (token, feature): keep the first draw
    key = flat_tok * width + feat
    key, first = np.unique(key, return_index=True)
    flat_tok, feat, vals = key // width, key % width, vals[first]
    seq, pos = flat_tok // ctx_len, flat_tok % ctx_len
    bounds = np.linspace(0, width, n_splits + 1).astype(np.int64)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        m = (feat >= start) & (feat < stop)
        order = np.lexsort((pos[m], seq[m]))  # delphi's order: by sequence, then position
        loc = np.stack([seq[m][order], pos[m][order], feat[m][order] - start], axis=1)
        small = loc[:, 2].max(initial=0) < 2**16 and loc[:, 0].max(initial=0) < 2**16
        save_file({"locations": loc.astype(np.uint16 if small else np.uint32),
                   "activations": vals[m][order].astype(act_dtype), "tokens": tokens},
                  str(folder / f"{start}_{stop - 1}.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "dataset_repo": "synthetic", "dataset_split": "train", "dataset_name": "", "dataset_column": "text",
        "batch_size": 8, "cache_ctx_len": ctx_len, "n_tokens": n_tok, "n_splits": n_splits,
        "model_name": model_name}))
    return {"tokens": tokens, "trigger_ids": trigger_ids, "nonzeros": int(len(feat)),
            "feature": feat, "seq": seq, "pos": pos, "value": vals}


def add_retrained_copy(store, dictionary, name: str, *, seed: int = 0, drop: float = 0.05, extra: float = 0.05,
                       noise: float = 0.2, direction_noise: float = 0.5, chunk: int = 4_000_000) -> np.ndarray:
    """A stand-in for a retrained SAE: dictionary `name` over the same corpus whose feature `perm[f]` is
    feature f of `dictionary`, with a share `drop` of its firings removed, `extra` x as many spurious ones
    added at random tokens, and every value scaled by a factor uniform in 1 +- `noise`; its output
    directions (when `dictionary` has them) moved alike, plus Gaussian noise of `direction_noise` x their norm. Returns `perm`
    (the true partner of new feature perm[f] is f). One transaction; reads a feature range at a time."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(dictionary.width)
    lengths = store.context_lengths(dictionary.corpus_id)
    with store.writer() as w:
        b = w.add_dictionary(name=name, corpus_id=dictionary.corpus_id, model=dictionary.model,
                             hook=dictionary.hook, width=dictionary.width, kind="external",
                             source=f"retrained copy of {dictionary.name} (seed {seed})", sorted_input=False)
        feats = np.arange(dictionary.width)
        for part in store.plan_chunks(dictionary.dictionary_id, feats, chunk):
            t = store.read_activations(dictionary.dictionary_id, int(part[0]), int(part[-1]))
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
        if store.direction_dim(dictionary.dictionary_id):  # its output directions, moved and perturbed alike
            _, va = store.directions(dictionary.dictionary_id)
            vb = np.empty_like(va)
            scale = np.linalg.norm(va.astype(np.float32), axis=1, keepdims=True) / np.sqrt(va.shape[1])
            vb[perm] = va + (direction_noise * scale * rng.standard_normal(va.shape)).astype(np.float16)
            w.add_directions(b.dictionary_id, vb)
    return perm
