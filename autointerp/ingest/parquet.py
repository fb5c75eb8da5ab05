"""Ingest the Parquet long format, for activations that come from elsewhere.

A folder (or the two files named explicitly) holding:

- `contexts.parquet`: `context_id` (integer, dense 0..n-1), `token_ids` (list of integers) and
  `tokens` (list of strings, one per token id; optional when a tokenizer folder is given).
  Contexts may differ in length.
- `activations.parquet` (or a folder of Parquet files): `feature`, `context_id`, `position`
  (integers) and `value` (float), one row per nonzero activation, in any order.
- optionally `dictionary.json`: {"model": ..., "hook": ..., "width": ...}.

The width is `--width`, else dictionary.json's, else the highest feature id + 1 (an id past 2^26 or far
beyond every other is refused as a stray: ingest/width.py); an id at or past a given width is a one-line
error naming the file and the id.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from ..progress import Progress

from ..errors import IngestError
from ..store import Store
from .tokens import TokenStrings
from .width import checked_width, inferred_width, outside

BATCH_ROWS = 2_000_000
CONTEXT_BATCH = 4096
ACT_COLUMNS = ("feature", "context_id", "position", "value")


def _dataset(path: Path, what: str) -> ds.Dataset:
    try:
        return ds.dataset(str(path), format="parquet")
    except Exception as e:
        raise IngestError(f"{path}: cannot read {what} as Parquet ({str(e).splitlines()[0]})") from None


def _require(schema: pa.Schema, cols: tuple[str, ...], path: Path) -> None:
    missing = [c for c in cols if c not in schema.names]
    if missing:
        raise IngestError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(schema.names)})")


def _read_contexts(path: Path, tokenizer: str | None) -> tuple[pa.Table, TokenStrings | None]:
    try:
        table = pq.read_table(str(path))
    except Exception as e:
        raise IngestError(f"{path}: cannot read contexts as Parquet ({str(e).splitlines()[0]})") from None
    _require(table.schema, ("context_id", "token_ids"), path)
    strings = None
    if "tokens" not in table.schema.names:
        if tokenizer is None:
            raise IngestError(f"{path}: no 'tokens' column; pass --tokenizer DIR to derive token strings")
        strings = TokenStrings.from_folder(str(tokenizer))
    table = table.sort_by("context_id")
    ids = table.column("context_id").to_numpy()
    if len(ids) == 0:
        raise IngestError(f"{path}: no contexts")
    if not np.array_equal(ids, np.arange(len(ids))):
        raise IngestError(f"{path}: context_id must be dense 0..{len(ids) - 1} (found gaps or duplicates)")
    return table, strings


def _fingerprint(table: pa.Table) -> str:
    import hashlib

    h = hashlib.sha256()
    tok = table.column("token_ids").combine_chunks()
    h.update(tok.offsets.to_numpy().astype("<i8").tobytes())
    h.update(tok.values.to_numpy().astype("<i8").tobytes())
    return "parquet-tokens:" + h.hexdigest()


def ingest_parquet(store: Store, path: str | Path, *, dictionary: str, contexts: str | Path | None = None,
                   width: int | None = None, model: str | None = None, hook: str | None = None,
                   tokenizer: str | None = None, replace: bool = False, progress: bool = False) -> dict:
    root = Path(path)
    if not root.exists():
        raise IngestError(f"{root} does not exist")
    meta: dict = {}
    if root.is_dir():
        act_path = root / "activations.parquet" if (root / "activations.parquet").exists() else root / "activations"
        ctx_path = Path(contexts) if contexts else root / "contexts.parquet"
        if (root / "dictionary.json").exists():
            try:
                meta = json.loads((root / "dictionary.json").read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise IngestError(f"{root / 'dictionary.json'}: not valid JSON ({str(e).splitlines()[0][:120]})") from None
            if not isinstance(meta, dict):
                raise IngestError(f"{root / 'dictionary.json'}: must be a JSON object (model, hook, width)")
    else:
        act_path, ctx_path = root, Path(contexts) if contexts else root.with_name("contexts.parquet")
    if not act_path.exists():
        raise IngestError(f"no activations Parquet at {act_path}")
    if not ctx_path.exists():
        raise IngestError(f"no contexts Parquet at {ctx_path} (pass --contexts FILE)")
    ctx_table, strings = _read_contexts(ctx_path, tokenizer)
    acts = _dataset(act_path, "activations")
    _require(acts.schema, ACT_COLUMNS, act_path)
    for col in ("feature", "context_id", "position"):
        if not pa.types.is_integer(acts.schema.field(col).type):
            raise IngestError(f"{act_path}: column {col} is {acts.schema.field(col).type}, expected an integer")
    if not (pa.types.is_floating(acts.schema.field("value").type) or pa.types.is_integer(acts.schema.field("value").type)):
        raise IngestError(f"{act_path}: column value is {acts.schema.field('value').type}, expected a float")
    if width is not None:
        given = checked_width(width, "--width")
        what = "--width"
    elif meta.get("width") is not None:
        given = width = checked_width(meta["width"], f"{root / 'dictionary.json'}: width")
        what = "dictionary.json width"
    else:  # the highest id + 1, unless it is a stray far beyond the others (ingest/width.py)
        given, col = None, acts.to_table(columns=["feature"]).column("feature")
        top = pc.max(col).as_py()
        second = None if top is None else pc.max(pc.filter(col, pc.less(col, top))).as_py()
        width = 1 if top is None or top < 0 else inferred_width(int(top), second, str(act_path))
    lengths = pc.list_value_length(ctx_table.column("token_ids")).to_numpy()
    with store.transaction() as w:
        cid, created = w.activations.add_corpus(name=ctx_path.stem, tokenizer=strings.name if strings else "external",
                                    ctx_len=int(lengths.max()), fingerprint=_fingerprint(ctx_table),
                                    source=str(ctx_path.resolve()))
        if created:
            for i in range(0, ctx_table.num_rows, CONTEXT_BATCH):
                block = ctx_table.slice(i, CONTEXT_BATCH)
                ids = [np.asarray(x, dtype=np.int64) for x in block.column("token_ids").to_pylist()]
                toks = block.column("tokens").to_pylist() if strings is None else [strings(x[None])[0] for x in ids]
                if any(t is None for t in toks):
                    raise IngestError(f"{ctx_path}: null token strings in contexts {i}..{i + len(toks) - 1}")
                w.activations.add_contexts(cid, ids, toks)
        b = w.activations.add_dictionary(name=dictionary, corpus_id=cid, model=model or meta.get("model", ""),
                             hook=hook or meta.get("hook", ""), width=int(width), kind="external",
                             source=str(act_path.resolve()), config=meta, replace=replace, sorted_input=False)
        bar = Progress(acts.count_rows(), f"ingest {dictionary}", "nz", progress, unit_scale=True)
        for batch in acts.to_batches(columns=list(ACT_COLUMNS), batch_size=BATCH_ROWS):
            cols = [batch.column(c).to_numpy(zero_copy_only=False) for c in ACT_COLUMNS]
            if any(batch.column(c).null_count for c in ACT_COLUMNS):
                raise IngestError(f"{act_path}: null values in the activation columns")
            if given is not None and len(cols[0]) and int(cols[0].max()) >= given:
                raise outside(str(act_path), int(cols[0].max()), given, what)
            b.append(*cols)
            bar.update(batch.num_rows)
        bar.close()
        n = b.finish()
    return {"dictionary": dictionary, "corpus_id": cid, "corpus_created": created, "contexts": ctx_table.num_rows,
            "width": int(width), "nonzeros": n}
