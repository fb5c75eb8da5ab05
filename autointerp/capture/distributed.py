"""`capture --executor ray`: a capture split across Ray workers (one per GPU, or CPU workers).

The driver (the capture process, which alone writes the store):
1. resolves and checks everything as a local capture does (the model, loaded on its own CPU in the workers'
   dtype; the SAEs, hooks, widths, names, the corpus and the capture fingerprints; a name taken, a corpus
   changed): every bad input is refused, with the local capture's message, before anything is written;
2. packs the corpus once into token ids under a work folder beside the store (`<store>.capture-work/`, the
   same disk): a text corpus is packed a block at a time into `tokens.npy` (memory flat), a token array is
   read as it is;
3. splits the contexts into contiguous parts, one per worker, cut at multiples of the batch so every worker
   runs the batches a local capture runs, and starts one Ray task per part (`num_gpus=1` on CUDA);
4. ingests, in ONE transaction, the corpus and its contexts (an existing corpus of the same fingerprint is
   reused), each member's rows from its workers' shards (a Parquet batch at a time), and then the
   dictionaries as a local capture makes them (sorted by feature, statistics, neighbours, outputs; the same
   code). The work folder is removed afterwards, also on failure.

A worker loads the model and SAEs itself on its device, runs `DeviceSide` over its contexts and writes per
member Parquet shards in the long format `ingest parquet` reads (`<member>/part-<first context>.parquet`:
feature, context_id (global), position, value; a row group per batch). It never touches the store.

No resume: a Ray capture that fails or is interrupted writes nothing and removes its work folder; run it
again to start over (a local capture resumes from its checkpoints). On a cluster of several machines the
work folder, the corpus, the model and the SAEs must be at the same paths on every node (a shared disk).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..errors import CaptureError
from ..ingest.tokens import TokenStrings
from ..progress import Progress
from ..store import Store
from .corpus import TokenCorpus, open_corpus
from .corpus_tokens import one_line
from .device import DTYPES, dtype_name, resolve_device, resolve_dtype
from .model import load_model, model_label
from .plan import CaptureConfig, plan_members, split_sae_spec
from .run import (CaptureResult, Inputs, check_corpus_free, context_batches, finish_members, prepare_capture,
                  record_capture, resolve_inputs, stale_captures, total_contexts)
from .stream import DeviceSide

SHARD_SCHEMA = pa.schema([("feature", pa.uint32()), ("context_id", pa.uint32()), ("position", pa.uint16()),
                          ("value", pa.float32())])
PACK_CONTEXTS = 4096  # contexts packed, or stored, at a time
READ_ROWS = 1 << 21  # shard rows read back at a time
NPY_HEADER = 128  # bytes of the packed .npy's header, written once the row count is known


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: `workers` tasks (default: the GPUs the cluster has on CUDA, else its CPUs) on the
    Ray cluster at `address` (default: RAY_ADDRESS, else a Ray started here)."""

    workers: int | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise CaptureError(f"workers must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class WorkerPlan:
    """What every worker needs: the capture (absolute paths), its device and dtypes by name, the token ids
    (`tokens`: a .npy or .safetensors [n, ctx_len]) and the folder its shards go to."""

    config: CaptureConfig
    device: str
    dtype: str
    sae_dtype: str
    tokens: str
    out: str


def capture_part(plan: WorkerPlan, lo: int, hi: int) -> dict:
    """One Ray task: contexts [lo, hi) through the model and every member's encoder, each member's nonzeros
    written to `<out>/<member>/part-<lo>.parquet`; what it wrote."""
    t0 = time.perf_counter()
    c, device = plan.config, resolve_device(plan.device)
    assert isinstance(c.model, (str, Path))  # held models never reach Ray (capture_on_ray refuses them)
    net, tokenizer = load_model(c.model, quiet=True, device=device, dtype=DTYPES[plan.dtype])
    members = plan_members(net, model_label(Path(c.model)), c, device, DTYPES[plan.sae_dtype])
    special = np.array(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
    side, tokens = DeviceSide(net, members, device, c.threshold, special), open_corpus(plan.tokens)
    assert isinstance(tokens, TokenCorpus)  # plan.tokens is a token array (_packed)
    batch, counts = c.batch_contexts(tokens.ctx_len), [0] * len(members)
    paths = [Path(plan.out) / str(i) / f"part-{lo}.parquet" for i in range(len(members))]
    writers = []
    try:
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            writers.append(pq.ParquetWriter(p, SHARD_SCHEMA))
        for first in range(lo, hi, batch):
            ids = tokens.rows(first, min(first + batch, hi))
            out, _ = side.run(first, ids)
            for i, (tok, feat, val) in enumerate(out.host()):
                tok = tok.astype(np.int64)
                writers[i].write_table(pa.table([pa.array(feat.astype(np.uint32)),
                                                 pa.array((tok // ids.shape[1] + first).astype(np.uint32)),
                                                 pa.array((tok % ids.shape[1]).astype(np.uint16)),
                                                 pa.array(val.astype(np.float32))], schema=SHARD_SCHEMA))
                counts[i] += len(val)
    finally:
        for w in writers:
            w.close()
    return {"first": lo, "contexts": hi - lo, "nonzeros": counts, "seconds": time.perf_counter() - t0}


def capture_on_ray(store: Store, config: CaptureConfig, options: RayOptions = RayOptions(),
                   progress: bool = False) -> CaptureResult:
    """Capture every member of `config` into `store` with Ray workers; stores exactly what `capture` stores
    (the dictionaries' config adds "executor": "ray" and the worker count). Never resumes (see the module)."""
    c, t0 = config, time.perf_counter()
    if not isinstance(c.model, (str, Path)) or not isinstance(c.corpus, (str, Path)) or \
            not all(isinstance(s, str) for s in c.saes):  # refused before Ray is even imported
        raise CaptureError("a Ray capture sends its workers files: a model, SAE or texts held in memory capture "
                           "in this process (capture(store, config))")
    try:
        import ray
    except ImportError:
        raise CaptureError("--executor ray needs Ray: pip install 'autointerp[ray]'") from None
    device = _worker_device(c.device)
    dtype, sae_dtype = _worker_dtype(c.dtype, device), _worker_dtype(c.sae_dtype, device)
    x = resolve_inputs(c, torch.device("cpu"), dtype, sae_dtype)  # 1. the driver's copy: checks, then outputs
    device_name, dtype_str = device.type, dtype_name(dtype)
    base = dict(device=device_name, dtype=dtype_str)
    state = prepare_capture(store, c, x.members, x.fp)
    if isinstance(state, CaptureResult):  # complete already
        return CaptureResult(**{**state.__dict__, **base, "ctx_len": x.ctx_len})
    if state is not None and not c.replace:
        raise CaptureError(f"an unfinished capture of {', '.join(state.names)} ({state.contexts_done:,} contexts "
                           f"done) is in {store.path}: finish it with --executor local (which resumes), or "
                           "pass --replace to start over")
    stale = stale_captures(store, [m.name for m in x.members])  # dropped in the one transaction below
    check_corpus_free(store, x.corpus_fp, ignoring={s.capture_id for s in stale})
    work = Path(f"{store.path}.capture-work")
    shutil.rmtree(work, ignore_errors=True)  # what a killed driver left: never resumed
    try:  # 2. pack the corpus once
        work.mkdir(parents=True)
        tokens, n = _packed(x, c, work)
        found = store.activations.corpus_by_fingerprint(x.corpus_fp)
        if found is not None and any(s.creates_corpus and s.corpus_id == found.corpus_id for s in stale):
            found = None  # half packed by a capture this one replaces: dropped with it
        if found is not None and found.n_contexts != n:
            raise CaptureError(f"corpus {found.corpus_id} in the store holds {found.n_contexts:,} contexts but this "
                               f"corpus packs into {n:,}: it changed since it was stored")
        ray.init(address=options.address, include_dashboard=False, log_to_driver=False,  # 3. one task per part
                 ignore_reinit_error=True, configure_logging=False)
        have = ray.cluster_resources()
        if device.type == "cuda" and have.get("GPU", 0) < 1:
            raise CaptureError(f"device {c.device!r}: the Ray cluster has no GPU; use --device cpu")
        workers = options.workers or max(1, int(have.get("GPU" if device.type == "cuda" else "CPU", 1)))
        parts = _split(n, c.batch_contexts(x.ctx_len), workers)
        plan = WorkerPlan(_absolute(c, Path(x.model.ref)), device.type, dtype_name(dtype), dtype_name(sae_dtype),
                          str(tokens), str(work / "shards"))
        task = ray.remote(capture_part).options(num_gpus=1 if device.type == "cuda" else 0, max_retries=0)
        t_loop = time.perf_counter()
        refs = [task.remote(plan, lo, hi) for lo, hi in parts]
        done = _wait(ray, refs, n * x.ctx_len, x.ctx_len, ", ".join(m.name for m in x.members), progress)
        loop = time.perf_counter() - t_loop
        strings = TokenStrings(x.tokenizer, x.model.ref)
        with store.transaction() as w:  # 4. everything in one transaction
            for s in stale:
                w.captures.drop_capture(s)
            capture_id, cid, created = record_capture(w, c, x, {"executor": "ray", "workers": len(parts)})
            if created:
                packed = open_corpus(tokens)
                assert isinstance(packed, TokenCorpus)  # a token array (_packed)
                for lo in range(0, n, PACK_CONTEXTS):
                    ids = packed.rows(lo, min(lo + PACK_CONTEXTS, n))
                    w.activations.add_contexts(cid, list(ids), strings(ids))
            nonzeros = sum(_ingest_shards(w, capture_id, i, work / "shards", done) for i in range(len(x.members)))
            w.captures.capture_progress(capture_id, n, nonzeros)
            state = next(s for s in store.captures.all() if s.capture_id == capture_id)
            dicts = finish_members(w, c, state, x.members, x.net, strings, progress)
            w.captures.end_capture(state)
    except KeyboardInterrupt:
        return CaptureResult("interrupted", 0, False, 0, x.ctx_len, 0, 0, time.perf_counter() - t0,
                             tuple({"name": m.name} for m in x.members), device_name, dtype_str)
    finally:
        if ray.is_initialized():  # a failed driver's other tasks end with its job (ray.cancel(force=True)
            ray.shutdown()        # can abort the driver when a task finishes meanwhile: a Ray bug, 2.60)
        shutil.rmtree(work, ignore_errors=True)
    return CaptureResult("done", cid, created, n, x.ctx_len, sum(d["nonzeros"] for d in dicts), 0,
                         time.perf_counter() - t0, tuple(dicts), device_name, dtype_str, loop_seconds=loop)


def _worker_device(name: str | None) -> torch.device:
    """The workers' device: `cuda` and `cuda:N` mean one GPU each (Ray picks which), also from a driver without
    one; `auto` means CUDA when this machine sees a GPU; `cpu` and `mps` as in a local capture."""
    n = (name or "auto").strip().lower()
    if re.fullmatch(r"cuda(:\d+)?", n):
        return torch.device("cuda")
    d = resolve_device(n)
    return torch.device(d.type)


def _worker_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """As `resolve_dtype` on the workers' device; `auto` for CUDA workers seen from a driver without a GPU is
    bfloat16 (what a local capture picks on any GPU that has it)."""
    if device.type == "cuda" and not torch.cuda.is_available() and (name or "auto").strip().lower() == "auto":
        return torch.bfloat16
    return resolve_dtype(name, device)


def _absolute(c: CaptureConfig, model_path: Path) -> CaptureConfig:
    """The config with absolute model and SAE paths: a Ray worker runs in a folder of its own."""
    saes = []
    for spec in c.saes:
        assert isinstance(spec, str)  # held SAEs never reach Ray (capture_on_ray refuses them)
        path, hook = split_sae_spec(spec)
        saes.append(str(path.resolve()) + (f"@{hook}" if hook else ""))
    return dataclasses.replace(c, model=str(model_path), saes=tuple(saes))


def _packed(x: Inputs, c: CaptureConfig, work: Path) -> tuple[Path, int]:
    """(a token-id file the workers read, its contexts): a token array as it is, or a text corpus packed into
    `work/tokens.npy` (int32) a block of contexts at a time, the header written once the count is known."""
    if isinstance(x.corpus, TokenCorpus):
        n = total_contexts(x.corpus, x.ctx_len, c.max_tokens)
        assert n is not None  # known for a token array
        return x.corpus.path, n
    path, n = work / "tokens.npy", 0
    with path.open("wb") as f:
        f.write(bytes(NPY_HEADER))
        for ids in context_batches(x.corpus, x.tokenizer, x.ctx_len, c.max_tokens, 0, PACK_CONTEXTS):
            f.write(ids.astype("<i4").tobytes())
            n += len(ids)
        text = "{'descr': '<i4', 'fortran_order': False, 'shape': (%d, %d), }" % (n, x.ctx_len)
        f.seek(0)
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", NPY_HEADER - 10) + text.ljust(NPY_HEADER - 11).encode()
                + b"\n")
    return path, n


def _split(n: int, batch: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) parts of n contexts, at most one per worker, cut at multiples of `batch`."""
    blocks = -(-n // batch)
    k = max(1, min(workers, blocks))
    cuts = [min(n, (i * blocks // k) * batch) for i in range(k + 1)]
    return [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]


def _wait(ray, refs: list, total: int, ctx_len: int, names: str, progress: bool) -> list[dict]:
    """Every part's result, in context order; a worker's error as one line."""
    from ray.exceptions import RayError, RayTaskError

    out, pending = [], list(refs)
    with Progress(total, f"capture {names} on {len(refs)} Ray workers", "tok", progress, unit_scale=True) as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                part = ray.get(ready[0])
            except RayTaskError as e:
                cause = e.cause if isinstance(e.cause, BaseException) else e
                raise CaptureError(f"a Ray worker failed: {one_line(cause)}") from None
            except RayError as e:
                raise CaptureError(f"a Ray worker failed: {one_line(e)}") from None
            out.append(part)
            bar.update(part["contexts"] * ctx_len, f"{len(out)}/{len(refs)} parts")
    return sorted(out, key=lambda p: p["first"])


def _ingest_shards(w, capture_id: int, member: int, shards: Path, parts: list[dict]) -> int:
    """Append one member's rows from every worker's shard to the capture's staging table, a batch at a time;
    how many (checked against what the workers said they wrote)."""
    n = 0
    for part in parts:
        with pq.ParquetFile(shards / str(member) / f"part-{part['first']}.parquet") as pf:
            for b in pf.iter_batches(batch_size=READ_ROWS, columns=list(SHARD_SCHEMA.names)):
                w.captures.add_capture_rows(capture_id, member, *(b.column(k).to_numpy() for k in SHARD_SCHEMA.names))
                n += b.num_rows
    want = sum(p["nonzeros"][member] for p in parts)
    if n != want:
        raise CaptureError(f"the workers wrote {want:,} rows of member {member} but the shards hold {n:,}")
    return n
