"""`autointerp search` (features by the meaning of their labels) and `autointerp encode` (a corpus's context
encoding, paid once per store)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import UsageError
from .common import (DeviceOpt, DictOpt, JsonOpt, StoreOpt, check_limit, emit_json, encoder_device, handle_errors,
                     opened, safe, show_progress)

if TYPE_CHECKING:
    import numpy as np


@handle_errors
def search(query: Annotated[str, typer.Argument(help="What the features should mean, in words.")],
           store: StoreOpt, dictionary: DictOpt = None,
           limit: Annotated[int, typer.Option(help="Hits to show (1..1000).")] = 20,
           as_json: JsonOpt = False) -> None:
    """Features whose labels are nearest QUERY in meaning (all-MiniLM-L6-v2), with label, grades and a top
    window. Labels written before search existed are embedded first (the store is opened for writing then)."""
    from ..export.browser import describe_hits
    from ..progress import Progress
    from ..search import LABELS, LabelIndex, index_missing

    check_limit(limit)
    if limit > 1000:
        raise UsageError(f"--limit must be at most 1000, not {limit}")
    if not query.strip():
        raise UsageError("the query is empty")
    with opened(store, read_only=True) as s:
        d = s.dictionary(dictionary) if dictionary else None
        missing = len(s.vectors.unindexed_labels(LABELS, None if d is None else d.dictionary_id))
    if missing:
        with opened(store) as s:
            bar = Progress(missing, "index labels for search", "label", show_progress(as_json))
            try:
                index_missing(s, None if d is None else d.dictionary_id, bar)
            finally:
                bar.close()
    with opened(store, read_only=True) as s:
        index = LabelIndex(s, None if d is None else d.dictionary_id)
        hits = describe_hits(s, index.query(query, limit, None if d is None else d.dictionary_id))
    if as_json:
        emit_json({"query": query, "rows": hits})
        return
    if not hits:
        typer.echo("no labelled features to search")
    for h in hits:
        grades = " ".join(f"{k}={'–' if v is None else f'{v:.3f}'}" for k, v in h["scores"].items())
        typer.echo(f"{h['similarity']:.3f}\t{safe(h['dictionary'])}#{h['feature']}\t{safe(h['label'])}"
                   + (f"\t{grades}" if grades else ""))
        if h["top"]:
            t = h["top"]
            typer.echo("\t\t" + "".join(f"[{safe(x)}]" if i == t["peak"] else safe(x)
                                          for i, x in enumerate(t["tokens"])))


@handle_errors
def encode(store: StoreOpt, dictionary: DictOpt = None, device: DeviceOpt = "auto", as_json: JsonOpt = False) -> None:
    """Encode the corpus of a dictionary for the offline scorers, once per store (all-MiniLM-L6-v2 over every
    context, kept in the store); `label` does it as it goes otherwise. Resumes where a stopped run left off."""
    encoder_device(device)
    from ..progress import Progress
    from ..embed import ENCODING, ContextEncoder

    with opened(store) as s:
        d = s.dictionary(dictionary)
        enc = ContextEncoder(s.activations, s.vectors, d.corpus_id, cache_tokens=0)
        todo = s.corpus(d.corpus_id).n_contexts - len(s.vectors.encoded_contexts(d.corpus_id, ENCODING))
        bar = Progress(todo, f"encode {s.corpus(d.corpus_id).name}", "ctx", show_progress(as_json))
        done = 0
        pending: dict[int, np.ndarray] = {}  # context id -> its vectors, not yet committed

        def commit() -> None:
            nonlocal done, pending
            if pending:
                with s.transaction() as w:
                    w.vectors.add_context_vectors(d.corpus_id, ENCODING, pending)
                done, pending = done + len(pending), {}

        try:
            for out in enc.encode_all(bar):
                pending.update(out)
                if len(pending) >= 1024:  # a commit per 1,024 contexts: a stopped run keeps them
                    commit()
        finally:
            commit()
            bar.close()
    res = {"dictionary": d.name, "encoded": done, "left": todo - done, "encoding": ENCODING}
    if as_json:
        emit_json(res)
    else:
        typer.echo(f"encoded {done:,} contexts ({ENCODING}); {todo - done:,} left" if done < todo else
                   f"encoded {done:,} contexts ({ENCODING}); the corpus is done")
