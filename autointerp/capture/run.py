"""Live capture: run a local model over a corpus and store the activations of every dictionary it feeds.

One forward pass per batch feeds every member (SAEs at their hooks, raw neurons) and stops after the deepest
hooked module; only nonzeros leave the device, and a background thread writes them (capture/stream.py). The
capture commits every `checkpoint_tokens`: killed at any point, the same command resumes from the last
checkpoint and stores exactly what an uninterrupted run stores; run again once finished, it says the
dictionaries are complete. When the last context is in, each member's rows become a dictionary (sorted by
feature, with statistics, decoder neighbours, output directions and their logit lens) in one transaction.

Everything a capture can refuse (a device that is not there, a bad SAE, a hook that does not fit, a name
taken, a resume whose inputs changed) is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import duckdb
import numpy as np
import torch

from ..errors import CaptureError, StoreError
from ..ingest.tokens import TokenStrings
from ..progress import Progress
from ..store import Store
from ..store.captures import CaptureState, staging_table
from .corpus import TextCorpus, TokenCorpus, open_corpus, pack_contexts
from .device import dtype_name, resolve_device, resolve_dtype
from .lens import logit_lens, output_directions, unembedding
from .held import HeldModel, HeldSAE, TextList
from .model import load_model, model_identity, model_label, tokenizer_identity
from .plan import CaptureConfig, Member, capture_fingerprint, check_widths, plan_members
from .stream import DeviceSide, StoreSide

NEIGHBOR_BLOCK = 4096


@dataclass(frozen=True)
class CaptureResult:
    """What a capture did: `status` "done" (captured now), "complete" (it had been, nothing to do) or
    "interrupted" (what was committed stays: run again to go on); one entry per dictionary."""

    status: str
    corpus_id: int
    corpus_created: bool
    contexts: int
    ctx_len: int
    nonzeros: int
    resumed_from: int  # contexts already done when this run started
    seconds: float  # the whole capture after the model loaded: the loop, then the final sort and statistics
    dictionaries: tuple[dict, ...]
    device: str
    dtype: str
    loop_seconds: float = 0.0  # of `seconds`, the forward passes and writes (the rest: the final sort, statistics)

    @property
    def tokens(self) -> int:
        return self.contexts * self.ctx_len

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["tokens"] = self.tokens
        d["dictionaries"] = list(self.dictionaries)
        if len(self.dictionaries) == 1:  # one dictionary: its fields at the top, as before
            d.update({k: v for k, v in self.dictionaries[0].items() if k != "name"},
                     dictionary=self.dictionaries[0]["name"])
        return d


def corpus_fingerprint(tokenizer_id: str, corpus, ctx_len: int, max_tokens: int | None) -> str:
    """Equal fingerprints mean equal packed contexts, so a second capture reuses them."""
    parts = ["capture-v2", corpus.kind, tokenizer_id, corpus.fingerprint(), str(ctx_len), str(max_tokens)]
    return "capture:" + hashlib.sha256("|".join(parts).encode()).hexdigest()


def context_batches(corpus, tokenizer, ctx_len: int, max_tokens: int | None, start: int,
                    batch: int) -> Iterator[np.ndarray]:
    """Token-id arrays [<= batch, ctx_len] from context `start` on: a token array sliced, or a text corpus
    packed (and the contexts before `start` skipped: they are packed again, not run)."""
    if corpus.kind == "tokens":
        n = corpus.n_rows if max_tokens is None else min(corpus.n_rows, max_tokens // ctx_len)
        for lo in range(start, n, batch):
            yield corpus.rows(lo, min(lo + batch, n)).astype(np.int64, copy=False)
        return
    contexts = islice(pack_contexts(tokenizer, corpus.documents(), ctx_len, max_tokens, source=str(corpus.path)),
                      start, None)
    while True:
        rows = list(islice(contexts, batch))
        if not rows:
            return
        yield np.asarray(rows, dtype=np.int64)


def total_contexts(corpus, ctx_len: int, max_tokens: int | None) -> int | None:
    if corpus.kind == "tokens":
        return corpus.n_rows if max_tokens is None else min(corpus.n_rows, max_tokens // ctx_len)
    return None if max_tokens is None else max_tokens // ctx_len


@dataclass(frozen=True)
class ModelRef:
    """A capture's model as the store records it. `ref`: its resolved path, or `memory:NAME` for a held one
    (capture/held.py); `label`: the `<model>` of dictionary names; `identity` and `tokenizer_id`: what a
    resume must find again (see model_identity, tokenizer_identity)."""

    ref: str
    label: str
    identity: str
    tokenizer_id: str


@dataclass
class Inputs:
    """A capture's inputs, resolved and checked: the corpus, the model on its device, the members with their
    widths, and the fingerprints of the packed corpus and of the capture."""

    corpus: TextCorpus | TokenCorpus | TextList
    ctx_len: int
    model: ModelRef
    net: torch.nn.Module
    tokenizer: object
    members: list[Member]
    side: DeviceSide
    corpus_fp: str
    fp: str
    dtype: torch.dtype
    sae_dtype: torch.dtype


def resolve_inputs(c: CaptureConfig, device: torch.device, dtype: torch.dtype, sae_dtype: torch.dtype) -> Inputs:
    """Open the corpus, load the model and SAEs on `device`, resolve every hook and width; CaptureError (one
    line) for anything that does not fit, before anything is written. A held model (HeldModel) is used where
    it is: `device` and `dtype` are its own (resolve_held)."""
    corpus = c.corpus if isinstance(c.corpus, TextList) else open_corpus(c.corpus, c.text_column)
    ctx_len = _ctx_len(corpus, c.ctx_len)
    if isinstance(c.model, HeldModel):
        net, tokenizer = c.model.module, c.model.tokenizer
        ref = ModelRef(c.model.ref, c.model.name, c.model.identity(), c.model.tokenizer_identity())
    else:
        model_path = Path(c.model).resolve()
        net, tokenizer = load_model(model_path, quiet=True, device=device, dtype=dtype)
        ref = ModelRef(str(model_path), model_label(model_path), model_identity(model_path),
                       tokenizer_identity(tokenizer, model_path))
    max_pos = getattr(net.config, "max_position_embeddings", None)
    if isinstance(max_pos, int) and ctx_len > max_pos:
        raise CaptureError(f"ctx_len {ctx_len} exceeds the model's {max_pos} positions")
    if isinstance(corpus, TokenCorpus):
        top = corpus.max_id()
        if top >= len(tokenizer):
            raise CaptureError(f"corpus {corpus.path} holds token id {top}, beyond the vocabulary of "
                               f"{Path(ref.ref).name} ({len(tokenizer)} tokens): not tokenised for this model")
    members = plan_members(net, ref.label, c, device, sae_dtype)
    for m in members:
        if isinstance(m.sae, HeldSAE):
            m.sae.to(device, dtype)  # a held SAE gets the model's activations as they are
            if c.neighbors and m.sae.W_dec is None:
                raise CaptureError(f"neighbors need decoder directions: give HeldSAE {m.sae.name!r} its W_dec")
    special = np.array(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
    side = DeviceSide(net, members, device, c.threshold, special)
    first = next(context_batches(corpus, tokenizer, ctx_len, c.max_tokens, 0, 1), None)
    if first is None:
        raise CaptureError(f"corpus {corpus.path} yields no full context of {ctx_len} tokens")
    check_widths(members, side.widths(first))
    corpus_fp = corpus_fingerprint(ref.tokenizer_id, corpus, ctx_len, c.max_tokens)
    fp = capture_fingerprint(corpus_fp, ref.identity, members, c, dtype, sae_dtype)
    return Inputs(corpus, ctx_len, ref, net, tokenizer, members, side, corpus_fp, fp, dtype, sae_dtype)


def resolve_held(c: CaptureConfig) -> tuple[torch.device, torch.dtype, torch.dtype] | None:
    """A held model's own device and dtype (its SAEs get its activations as they are), or None for a model
    loaded from a file. A `device` or `dtype` other than the model's is refused: capture does not move it."""
    if not isinstance(c.model, HeldModel):
        return None
    device, dtype = c.model.device(), c.model.dtype()
    if c.device != "auto" and resolve_device(c.device) != device:
        raise CaptureError(f"the held model {c.model.name!r} is on {device}, not {c.device}: move it (model.to(...)) "
                           "or leave device as auto")
    if c.dtype != "auto" and resolve_dtype(c.dtype, device) != dtype:
        raise CaptureError(f"the held model {c.model.name!r} is in {dtype_name(dtype)}, not {c.dtype}: convert it "
                           "or leave dtype as auto")
    return device, dtype, dtype


def capture(store: Store, config: CaptureConfig, progress: bool = False) -> CaptureResult:
    """Capture every member of `config` over its corpus into `store` (resuming an unfinished capture of the
    same inputs). Values above `threshold` are stored; positions holding special tokens never are."""
    c = config
    held = resolve_held(c)
    if held is not None:
        device, dtype, sae_dtype = held
    else:
        device = resolve_device(c.device)
        dtype, sae_dtype = resolve_dtype(c.dtype, device), resolve_dtype(c.sae_dtype, device)
    x = resolve_inputs(c, device, dtype, sae_dtype)
    corpus, ctx_len, tokenizer, members = x.corpus, x.ctx_len, x.tokenizer, x.members
    t0 = time.perf_counter()
    device_name, dtype_str = str(device), dtype_name(dtype)
    base = dict(device=device_name, dtype=dtype_str, ctx_len=ctx_len)

    state = prepare_capture(store, c, members, x.fp)
    if isinstance(state, CaptureResult):  # complete already
        return CaptureResult(**{**state.__dict__, **base})
    if state is None:
        state = _begin(store, c, x)
    resumed = state.contexts_done
    strings = TokenStrings(tokenizer, x.model.ref)
    batch = state.batch_contexts
    commit = max(1, -(-c.checkpoint_tokens // (batch * ctx_len))) * batch
    writer = StoreSide(store, state, strings, state.creates_corpus, commit)
    total = total_contexts(corpus, ctx_len, c.max_tokens)
    interrupted = False
    names = ", ".join(m.name for m in members)
    total_tokens = None if total is None else total * ctx_len
    with Progress(total_tokens, f"capture {names}", "tok", progress, unit_scale=True) as bar:
        if resumed:
            bar.update(resumed * ctx_len, f"resumed at context {resumed:,}")
        writer.start()
        nz, t_start, first = 0, time.perf_counter(), resumed
        try:
            for ids in context_batches(corpus, tokenizer, ctx_len, c.max_tokens, resumed, batch):
                out, n = x.side.run(first, ids)
                writer.put(out)
                first += len(ids)
                nz += n
                bar.update(ids.size, f"{nz / max(time.perf_counter() - t_start, 1e-9):,.0f} nonzeros/s")
        except KeyboardInterrupt:
            interrupted = True
        except BaseException:
            writer.finish(failed=True)
            raise
        writer.finish(interrupted=interrupted)
    loop = time.perf_counter() - t_start
    state = next(s for s in store.captures.all() if s.capture_id == state.capture_id)
    if interrupted:
        return CaptureResult("interrupted", state.corpus_id, state.creates_corpus, state.contexts_done, ctx_len,
                             state.nonzeros, resumed, time.perf_counter() - t0,
                             tuple({"name": m.name} for m in members), device_name, dtype_str, loop_seconds=loop)
    _check_corpus(store, state, total)
    done = _finish(store, c, state, members, x.net, strings, progress)
    return CaptureResult("done", state.corpus_id, state.creates_corpus, state.contexts_done, ctx_len,
                         sum(d["nonzeros"] for d in done), resumed, time.perf_counter() - t0, tuple(done),
                         device_name, dtype_str, loop_seconds=loop)


def _ctx_len(corpus, ctx_len: int | None) -> int:
    if corpus.kind == "tokens":
        if ctx_len is not None and ctx_len != corpus.ctx_len:
            raise CaptureError(f"corpus {corpus.path} holds contexts of {corpus.ctx_len} tokens, not the "
                               f"{ctx_len} --ctx-len asks for (a token array is captured as it is)")
        return corpus.ctx_len
    return 64 if ctx_len is None else ctx_len


def prepare_capture(store: Store, c: CaptureConfig, members: list[Member],
                    fp: str) -> CaptureState | CaptureResult | None:
    """Where this capture stands in the store: an unfinished capture of the same inputs to resume (its state),
    a finished one whose dictionaries are still the ones it made (a "complete" result), or nothing yet (None).
    Refuses a name that is taken or an unfinished capture of other inputs (unless `replace`); writes nothing
    (what `replace` drops goes in the transaction that begins the new capture: `stale_captures`)."""
    names = [m.name for m in members]
    mine = store.captures.captures_of(names)
    same = [s for s in mine if s.fingerprint == fp and set(s.names) == set(names)]
    existing = {d.name: d for d in store.dictionaries()}
    if same and same[-1].status == "running":
        return same[-1]
    if same and not c.replace and all(existing.get(n) is not None and
                                      existing[n].config.get("capture_id") == same[-1].capture_id for n in names):
        s = same[-1]
        return CaptureResult("complete", s.corpus_id, False, s.contexts_done, 0, s.nonzeros, s.contexts_done, 0.0,
                             tuple({"name": n, "width": existing[n].width} for n in names), "", "")
    running = stale_captures(store, names)
    if running and not c.replace:
        s = running[-1]
        raise CaptureError(f"an unfinished capture of {', '.join(s.names)} from other inputs (another corpus, SAE, "
                           f"hook or threshold; {s.contexts_done:,} contexts done) is in {store.path}: run its "
                           "own command again to finish it, or pass --replace to start over")
    taken = [n for n in names if n in existing]
    if taken and not c.replace:
        raise CaptureError(f"dictionary {taken[0]!r} already exists in {store.path}; pass --replace to overwrite "
                           "it, or --dictionary NAME to capture under another name")
    return None


def stale_captures(store: Store, names) -> list[CaptureState]:
    """The unfinished captures of any of these names (a new capture of them with --replace drops them)."""
    return [s for s in store.captures.captures_of(names) if s.status == "running"]


def _begin(store: Store, c: CaptureConfig, x: Inputs) -> CaptureState:
    """Record a new capture (and the corpus it packs, unless the store holds it already), dropping in the same
    transaction the unfinished captures of its names that --replace starts over."""
    stale = stale_captures(store, [m.name for m in x.members])
    check_corpus_free(store, x.corpus_fp, ignoring={s.capture_id for s in stale})
    with store.transaction() as w:
        for s in stale:
            w.captures.drop_capture(s)
        record_capture(w, c, x)
    return next(s for s in store.captures.all() if s.fingerprint == x.fp and s.status == "running")


def check_corpus_free(store: Store, corpus_fp: str, ignoring: AbstractSet[int] = frozenset()) -> None:
    """Refuse a corpus the store holds but an unfinished capture (other than those `ignoring`) is still packing."""
    found = store.activations.corpus_by_fingerprint(corpus_fp)
    if found is not None:
        busy = store.captures.corpus_in_progress(found.corpus_id)
        if busy is not None and busy.capture_id not in ignoring:
            raise CaptureError(f"corpus {found.name!r} is still being packed by an unfinished capture of "
                               f"{', '.join(busy.names)}: run that command again to finish it first")


def record_capture(w, c: CaptureConfig, x: Inputs, extra: dict | None = None) -> tuple[int, int, bool]:
    """Inside `w`'s transaction: the corpus (reused when the store holds one of the same fingerprint) and a
    capture row; (capture id, corpus id, whether the corpus was created)."""
    if isinstance(x.corpus, TextList):
        source, name = x.corpus.source, x.corpus.name
    else:
        source, name = str(Path(x.corpus.path).resolve()), Path(x.corpus.path).stem
    cid, created = w.activations.add_corpus(name=name, tokenizer=x.model.ref, ctx_len=x.ctx_len,
                                            fingerprint=x.corpus_fp, source=source)
    cfg = {"threshold": c.threshold, "ctx_len": x.ctx_len, "max_tokens": c.max_tokens, "corpus": source,
           "text_column": c.text_column, "model": x.model.ref, "dtype": str(x.dtype),
           "sae_dtype": str(x.sae_dtype), "replace": c.replace, **(extra or {})}
    capture_id = w.captures.begin_capture(fingerprint=x.fp, corpus_id=cid, creates_corpus=created,
                                 batch_contexts=c.batch_contexts(x.ctx_len), members=[m.describe() for m in x.members],
                                 config=cfg)
    return capture_id, cid, created


def _check_corpus(store: Store, state: CaptureState, total: int | None) -> None:
    """A capture over a corpus the store held already must have seen exactly its contexts."""
    n = store.corpus(state.corpus_id).n_contexts
    if state.contexts_done != n:
        raise CaptureError(f"corpus {state.corpus_id} in the store holds {n:,} contexts but this corpus packs into "
                           f"{state.contexts_done:,}: it changed since it was stored")
    if state.contexts_done == 0:
        raise CaptureError("the corpus yields no full context")


def _finish(store: Store, c: CaptureConfig, state: CaptureState, members: list[Member], net, strings: TokenStrings,
            progress: bool) -> list[dict]:
    """Turn each member's staged rows into its dictionary, in one transaction (a failure here, say the disk
    filling up during the sort, is one line; the checkpoints stay and a rerun tries the finish again)."""
    try:
        with store.transaction() as w:
            out = finish_members(w, c, state, members, net, strings, progress)
            w.captures.end_capture(state)
    except duckdb.Error as e:
        raise StoreError(f"finishing the capture in {store.path} failed: {str(e).strip().splitlines()[0]}") from None
    return out


def finish_members(w, c: CaptureConfig, state: CaptureState, members: list[Member], net, strings: TokenStrings,
                   progress: bool) -> list[dict]:
    """Inside `w`'s transaction: each member's staged rows become its dictionary (sorted by feature, with
    statistics), with its decoder neighbours and output directions; what each dictionary got."""
    out = []
    corpus = w.activations.corpus(state.corpus_id)
    for i, m in enumerate(members):
        cfg = {**state.config, **m.config, "capture_id": state.capture_id}
        assert m.width is not None  # an SAE's d_sae, or the neurons' width check_widths set
        b = w.activations.add_dictionary(name=m.name, corpus_id=state.corpus_id, model=cfg["model"], hook=m.point.hook,
                             width=int(m.width), kind=m.kind, source=m.source or cfg["model"], config=cfg,
                             replace=c.replace or bool(state.config.get("replace")), sorted_input=False)
        b.take_staged(staging_table(state.capture_id, i))
        nonzeros = b.finish()
        if c.neighbors and m.sae is not None and m.sae.W_dec is not None:
            with torch.no_grad():
                for feature, neighbor, sim in decoder_neighbors(m.sae.W_dec, c.neighbors):
                    w.activations.add_neighbors(b.dictionary_id, feature, neighbor, sim)
        outputs = _add_outputs(w, b.dictionary_id, net, m, strings, progress) if c.outputs else {}
        out.append({"name": m.name, "kind": m.kind, "hook": m.point.hook, "width": int(m.width),
                    "nonzeros": nonzeros, "model": cfg["model"], "corpus": corpus.name, **outputs})
    return out


def decoder_neighbors(W_dec: torch.Tensor, k: int, block: int = NEIGHBOR_BLOCK):
    """Yield (feature, neighbor, similarity) arrays: each latent's top-k others by decoder cosine.

    Blocked so only a [block, d_sae] similarity matrix is held at a time (on W_dec's device).
    """
    W = torch.nn.functional.normalize(W_dec.to(torch.float32), dim=1)
    n = W.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        sim = W[lo:hi] @ W.T
        sim[torch.arange(hi - lo, device=W.device), torch.arange(lo, hi, device=W.device)] = -float("inf")
        top = torch.topk(sim, k, dim=1)
        feature = np.repeat(np.arange(lo, hi), k)
        yield feature, top.indices.reshape(-1).cpu().numpy(), top.values.reshape(-1).cpu().numpy()


def _add_outputs(w, dictionary_id: int, net, m: Member, strings: TokenStrings, progress: bool) -> dict:
    """Store the dictionary's output directions and, when they live in the hidden space of a model with an
    unembedding, each feature's logit-lens tokens. Returns what was stored, for the capture summary."""
    directions = output_directions(net, m.point, m.sae)
    if directions is None:
        return {"directions": None, "output_tokens": 0}
    w.activations.add_directions(dictionary_id, directions.vectors.numpy())
    unembed = unembedding(net) if directions.hidden else None
    if unembed is None:
        return {"directions": directions.source, "output_tokens": 0}
    table = strings.table
    if unembed.vocab > len(table):  # a vocabulary padded for speed (Pythia, Qwen): ids no tokenizer writes
        table = np.concatenate([table, np.array([f"<id {i}>" for i in range(len(table), unembed.vocab)],
                                                dtype=object)])
    n = len(directions.vectors)
    with Progress(n, f"logit lens {m.name}", "feat", progress) as bar:
        for feats, up, up_v, down, down_v in logit_lens(unembed, directions.vectors):
            w.activations.add_output_tokens(dictionary_id, feats, table, (up, up_v), (down, down_v))
            bar.update(len(feats))
    return {"directions": directions.source, "output_tokens": n}
