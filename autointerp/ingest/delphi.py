"""Ingest an EleutherAI delphi latent cache: `config.json` plus `<start>_<end>.safetensors` shards.

Each shard holds `locations` [N, 3] = (sequence, position, latent - start) as uint16/uint32,
`activations` [N] float16/float32 and `tokens` [n_seq, ctx_len] (the same array in every shard).
`end` is inclusive (delphi names a shard of latents 0..1023 `0_1023`). A cache folder may hold one
hookpoint (config.json and shards side by side) or several (one sub-folder each). A dictionary's width
is `--width` or the last shard's end + 1; a shard name that would make it implausible is refused
(`module_width`).

Memory does not grow with the cache: a shard is read with plain file reads, whole when it has at most
`SHARD_ROWS` rows, else in parts of about that many rows, each a range of its latents (one read of the
latent column counts the rows of each latent, then one pass over the shard per part).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ..progress import Progress

from ..errors import IngestError
from ..store import Store
from .tokens import TokenStrings, fingerprint_tokens
from .width import checked_width, implausible, outside

SHARD = re.compile(r"^(\d+)_(\d+)\.safetensors$")
CONTEXT_BATCH = 4096
SHARD_ROWS = 32_000_000  # a shard with more rows is read in parts of about this many (~1 GB of rows each)
BLOCK_ROWS = 4_000_000  # rows one read of a big shard takes
# safetensors dtypes as numpy reads them (little-endian); BF16 is read as its bits and widened to float32
DTYPES = {"U16": "<u2", "U32": "<u4", "U64": "<u8", "I16": "<i2", "I32": "<i4", "I64": "<i8", "F16": "<f2",
          "F32": "<f4", "F64": "<f8", "BF16": "<u2"}


@dataclass(frozen=True)
class Shard:
    start: int
    end: int  # inclusive
    path: Path
    n: int  # rows


@dataclass(frozen=True)
class DelphiModule:
    folder: Path
    hookpoint: str
    config: dict
    shards: tuple[Shard, ...]
    tokens_shape: tuple[int, int]

    @property
    def width(self) -> int:
        return self.shards[-1].end + 1


def _header(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            return {k: f.get_slice(k) for k in f.keys()} | {"__keys__": list(f.keys())}
    except Exception as e:
        raise IngestError(f"{path}: corrupt or truncated safetensors file ({str(e).splitlines()[0]})") from None


class ShardFile:
    """A shard's tensors, read by row range with plain file reads: a memory map (safetensors' own reader)
    would leave every page it touched in the process's resident memory until the file is closed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = open(path, "rb")
        try:
            n = int.from_bytes(self._f.read(8), "little")
            self.header = json.loads(self._f.read(n))
        except (ValueError, UnicodeDecodeError, MemoryError, OverflowError):
            self._f.close()
            raise IngestError(f"{path}: corrupt or truncated safetensors file (bad header)") from None
        self.base = 8 + n

    def __enter__(self) -> ShardFile:
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()

    def rows(self, name: str) -> int:
        return int(self.header[name]["shape"][0])

    def read(self, name: str, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Rows lo..hi (exclusive) of tensor `name`."""
        info = self.header[name]
        shape, dtype = info["shape"], np.dtype(DTYPES[info["dtype"]])
        per_row = int(np.prod(shape[1:], dtype=np.int64))
        hi = shape[0] if hi is None else hi
        self._f.seek(self.base + int(info["data_offsets"][0]) + lo * per_row * dtype.itemsize)
        count = (hi - lo) * per_row
        out = np.fromfile(self._f, dtype=dtype, count=count)
        if len(out) != count:
            raise IngestError(f"{self.path}: corrupt or truncated safetensors file ({name} ends early)")
        out = out.reshape(hi - lo, *shape[1:])
        if info["dtype"] == "BF16":
            out = (out.astype(np.uint32) << np.uint32(16)).view(np.float32)
        return out


def scan_module(folder: Path) -> DelphiModule:
    """Read and check the headers of every shard in one hookpoint folder (no tensor data loaded)."""
    cfg_path = folder / "config.json"
    config: dict = {}
    if cfg_path.exists():
        try:
            config = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise IngestError(f"{cfg_path}: not valid JSON ({e})") from None
    shards = []
    for p in sorted(folder.iterdir()):
        m = SHARD.match(p.name)
        if not m:
            continue
        start, end = int(m.group(1)), int(m.group(2))
        if end < start:
            raise IngestError(f"{p.name}: shard end {end} is before its start {start}")
        h = _header(p)
        for key in ("locations", "activations"):
            if key not in h:
                raise IngestError(f"{p}: no '{key}' tensor (found {', '.join(h['__keys__'])})")
        loc, act = h["locations"], h["activations"]
        if len(loc.get_shape()) != 2 or loc.get_shape()[1] != 3:
            raise IngestError(f"{p}: locations has shape {loc.get_shape()}, expected [N, 3]")
        if loc.get_dtype() not in ("U16", "U32", "I32", "I64", "U64", "I16"):
            raise IngestError(f"{p}: locations has dtype {loc.get_dtype()}, expected an integer type")
        if act.get_shape() != [loc.get_shape()[0]]:
            raise IngestError(f"{p}: activations has shape {act.get_shape()} but locations has "
                              f"{loc.get_shape()[0]} rows")
        if act.get_dtype() not in ("F16", "F32", "BF16", "F64"):
            raise IngestError(f"{p}: activations has dtype {act.get_dtype()}, expected float")
        if "tokens" in h and len(h["tokens"].get_shape()) != 2:
            raise IngestError(f"{p}: tokens has shape {h['tokens'].get_shape()}, expected [n_seq, ctx_len]")
        shards.append((Shard(start, end, p, loc.get_shape()[0]),
                       tuple(h["tokens"].get_shape()) if "tokens" in h else None))
    if not shards:
        raise IngestError(f"{folder}: no <start>_<end>.safetensors shards found")
    shards.sort(key=lambda s: s[0].start)
    for (a, _), (b, _) in zip(shards, shards[1:]):
        if b.start <= a.end:
            raise IngestError(f"shards {a.path.name} and {b.path.name} overlap")
    shapes = {s for _, s in shards if s is not None}
    if not shapes:
        raise IngestError(f"{folder}: no shard holds 'tokens' (cache saved without tokens); cannot build contexts")
    if len(shapes) > 1:
        raise IngestError(f"{folder}: shards disagree on the tokens shape: {sorted(shapes)}")
    shape = shapes.pop()
    ctx_len = config.get("cache_ctx_len")
    if ctx_len is not None and int(ctx_len) != shape[1]:
        raise IngestError(f"{folder}: config.json says cache_ctx_len={ctx_len} but tokens are {shape[1]} wide")
    return DelphiModule(folder, folder.name, config, tuple(s for s, _ in shards), shape)


def scan_cache(cache_dir: str | Path) -> list[DelphiModule]:
    root = Path(cache_dir)
    if not root.is_dir():
        raise IngestError(f"delphi cache {root} is not a folder")
    if any(SHARD.match(p.name) for p in root.iterdir()):
        return [scan_module(root)]
    subs = [p for p in sorted(root.iterdir()) if p.is_dir() and any(SHARD.match(q.name) for q in p.iterdir())]
    if not subs:
        raise IngestError(f"{root}: no delphi shards here or in its sub-folders")
    return [scan_module(p) for p in subs]


def _token_strings(module: DelphiModule, tokenizer: str | None) -> TokenStrings:
    if tokenizer is not None:
        return TokenStrings.from_folder(str(tokenizer))
    model = module.config.get("model_name")
    if model and Path(model).is_dir():
        return TokenStrings.from_folder(str(model))
    raise IngestError(f"no tokenizer for {module.folder}: pass --tokenizer DIR "
                      f"(config.json model_name {model!r} is not a local folder)")


def module_width(module: DelphiModule, width: int | None = None) -> int:
    """The width of a hookpoint's dictionary: `width` (--width; a shard reaching past it is an error), else
    the last shard's end + 1. delphi splits latents evenly (linspace), so with no width given a shard far
    wider than the others (a stray name such as 192_19999999) or an end past 2^26 is an error naming it."""
    last = module.shards[-1]
    if width is not None:
        if last.end >= checked_width(width, "--width"):
            raise outside(str(last.path), last.end, width)
        return width
    spans = [s.end - s.start + 1 for s in module.shards]
    usual = sorted(spans)[(len(spans) - 1) // 2]
    for s, n in zip(module.shards, spans):
        if abs(n - usual) > 2 + usual // 100:
            raise IngestError(f"{s.path}: feature index {s.end} (latents {s.start}..{s.end}: {n} where the other "
                              f"shards hold about {usual}; delphi splits latents evenly) would make a dictionary of "
                              f"{last.end + 1} features: pass --width if it really is that wide")
    if (e := implausible(str(last.path), last.end)) is not None:
        raise e
    return last.end + 1


def ingest_delphi(store: Store, cache_dir: str | Path, *, tokenizer: str | None = None,
                  dictionary: str | None = None, replace: bool = False, progress: bool = False,
                  width: int | None = None) -> list[dict]:
    """Ingest every hookpoint of a delphi cache in one transaction. Returns one summary per dictionary.
    `width`: every hookpoint's number of features (default: from its shard names, see `module_width`)."""
    modules = scan_cache(cache_dir)
    if dictionary is not None and len(modules) > 1:
        raise IngestError(f"{cache_dir} holds {len(modules)} hookpoints; --dictionary names one dictionary "
                          "(leave it out to name each after its hookpoint)")
    widths = [module_width(m, width) for m in modules]  # every width checked before anything is written
    summaries = []
    with store.transaction() as w:
        for module, d_width in zip(modules, widths):
            strings = _token_strings(module, tokenizer)
            tokens = _first_tokens(module)
            fp = fingerprint_tokens(tokens)
            cid, created = w.activations.add_corpus(name=str(module.config.get("dataset_repo") or module.folder.name),
                                        tokenizer=strings.name, ctx_len=int(tokens.shape[1]), fingerprint=fp,
                                        source=str(module.folder.resolve()))
            if created:
                for i in range(0, len(tokens), CONTEXT_BATCH):
                    block = tokens[i:i + CONTEXT_BATCH]
                    w.activations.add_contexts(cid, list(block), strings(block))
            name = dictionary or module.hookpoint
            b = w.activations.add_dictionary(name=name, corpus_id=cid, model=str(module.config.get("model_name", "")),
                                 hook=module.hookpoint, width=d_width, kind="delphi",
                                 source=str(module.folder.resolve()), config=module.config, replace=replace,
                                 sorted_input=True)
            bar = Progress(sum(s.n for s in module.shards), f"ingest {name}", "nz", progress, unit_scale=True)
            for shard in module.shards:
                with ShardFile(shard.path) as f:
                    if "tokens" in f.header and not np.array_equal(f.read("tokens"), tokens):
                        raise IngestError(f"{shard.path.name}: its tokens differ from the other shards'")
                    for loc, act in _shard_parts(f, shard, SHARD_ROWS, BLOCK_ROWS):
                        for rows in _partition_by_latent(loc, act, shard.start, shard.end - shard.start + 1):
                            b.append(*rows)
                        bar.update(len(act))
                        del loc, act
            bar.close()
            n = b.finish()
            summaries.append({"dictionary": name, "corpus_id": cid, "corpus_created": created,
                              "contexts": int(tokens.shape[0]), "ctx_len": int(tokens.shape[1]),
                              "width": d_width, "nonzeros": n, "shards": len(module.shards)})
    return summaries


def _check_offsets(shard: Shard, off: np.ndarray) -> None:
    width = shard.end - shard.start + 1
    if len(off) and (int(off.max()) >= width or int(off.min()) < 0):
        bad = int(off.max()) if int(off.max()) >= width else int(off.min())
        raise IngestError(f"{shard.path.name}: latent offset {bad} out of range for a shard "
                          f"of {width} latents ({shard.start}..{shard.end})")


def _shard_parts(f: ShardFile, shard: Shard, max_rows: int, block: int):
    """A shard's (locations, activations) in parts of about `max_rows` rows, each every row of a range
    of latents in file order: the whole shard when it has at most `max_rows` rows."""
    n = f.rows("locations")
    if n <= max_rows:
        loc = f.read("locations")
        _check_offsets(shard, loc[:, 2])
        yield loc, f.read("activations")
        return
    width = shard.end - shard.start + 1
    counts = np.zeros(width, np.int64)
    for i in range(0, n, block):
        off = f.read("locations", i, min(i + block, n))[:, 2]
        _check_offsets(shard, off)
        counts += np.bincount(off.astype(np.intp), minlength=width)
    ends = np.cumsum(counts)
    lo = 0
    while lo < width:  # latents lo..hi-1: about max_rows rows, at least one latent
        before = int(ends[lo - 1]) if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, before + max_rows, side="right")))
        if int(ends[hi - 1]) > before:
            locs, acts = [], []
            for i in range(0, n, block):
                loc = f.read("locations", i, min(i + block, n))
                keep = (loc[:, 2] >= lo) & (loc[:, 2] < hi)
                if keep.any():
                    locs.append(loc[keep])
                    acts.append(f.read("activations", i, min(i + block, n))[keep])
            part = np.concatenate(locs), np.concatenate(acts)
            del locs, acts  # the pieces go before the caller works on the part
            yield part
            del part
        lo = hi


def _stable_order(off: np.ndarray, width: int) -> np.ndarray:
    """A stable argsort of latent offsets below `width`, by radix (numpy's stable sort of a 16-bit key is
    a radix sort; a wider key is sorted by its low half, then stably by its high half)."""
    if width <= 2**16:
        return np.argsort(off.astype(np.uint16), kind="stable")
    low = np.argsort((off & 0xFFFF).astype(np.uint16), kind="stable")
    return low[np.argsort((off.take(low) >> 16).astype(np.uint16), kind="stable")]


def _partition_by_latent(loc: np.ndarray, act: np.ndarray, start: int, width: int, slice_rows: int = 2_000_000):
    """A shard's rows as (feature, sequence, position, value) slices, partitioned by latent.

    The sort is stable, so rows keep delphi's (sequence, position) order within each latent: the
    result is (feature, context, position)-sorted without a full sort (a radix sort of the latent).
    Slices of `slice_rows` bound the memory a big shard needs beyond its own arrays.
    """
    off = loc[:, 2]
    order = _stable_order(off, width)
    for i in range(0, len(order), slice_rows):
        o = order[i:i + slice_rows]
        feature = off.take(o).astype(np.uint32)
        feature += np.uint32(start)
        yield feature, loc[:, 0].take(o), loc[:, 1].take(o), act.take(o)


def _first_tokens(module: DelphiModule) -> np.ndarray:
    from safetensors import safe_open

    for s in module.shards:
        with safe_open(str(s.path), framework="np") as f:
            if "tokens" in f.keys():
                return f.get_tensor("tokens")
    raise IngestError(f"{module.folder}: no shard holds 'tokens'")
