"""`autointerp ingest ...`: bring activations computed elsewhere into a store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from ..ingest import ingest_delphi, ingest_neuronpedia, ingest_parquet
from ..ingest.width import checked_width
from .common import (
    DictOpt,
    JsonOpt,
    StoreOpt,
    check_choice,
    emit_json,
    handle_errors,
    opened,
    show_progress,
)

app = typer.Typer(help="Ingest activations (delphi latent caches, the Parquet long format, Neuronpedia or "
                       "SAEDashboard feature JSON) or labels made elsewhere.", no_args_is_help=True)

ReplaceOpt = Annotated[bool, typer.Option("--replace", help="Overwrite a dictionary of the same name.")]
WIDTH_RULE = ("A feature index at or past the width, or (with no width given) past 2^26 or far beyond every "
              "other index, stops the ingest: exit 4, naming the file and the index.")


def check_width(width: int | None) -> int | None:
    """--width: a whole number of features the store can hold (1 .. 2^32 - 1), else a usage error."""
    return None if width is None else checked_width(width, "--width", UsageError)


@app.command("delphi")
@handle_errors
def delphi(cache_dir: Annotated[Path, typer.Argument(help="delphi cache: a hookpoint folder, or a folder of them.")],
           store: StoreOpt,
           tokenizer: Annotated[Path | None, typer.Option(help="Local Hugging Face tokenizer folder for token "
                                                          "strings (default: config.json model_name).")] = None,
           dictionary: DictOpt = None,
           width: Annotated[int | None, typer.Option(help="Number of features of each hookpoint (default: the last "
                                                    "shard's end + 1).")] = None,
           replace: ReplaceOpt = False, as_json: JsonOpt = False) -> None:
    """Ingest a delphi latent cache (config.json + <start>_<end>.safetensors shards), atomically. A shard
    reaching past --width, or (with no --width) a shard far wider than the others (delphi splits latents
    evenly) or ending past 2^26, stops the ingest: exit 4, naming the shard and the index."""
    check_width(width)
    with opened(store, create=True) as s:
        out = ingest_delphi(s, cache_dir, tokenizer=str(tokenizer) if tokenizer else None, dictionary=dictionary,
                            replace=replace, progress=show_progress(as_json), width=width)
    if as_json:
        emit_json({"store": str(store), "ingested": out})
    else:
        for d in out:
            typer.echo(f"ingested {d['dictionary']}: {d['width']} features, {d['nonzeros']:,} nonzeros over "
                       f"{d['contexts']:,} contexts of {d['ctx_len']} tokens"
                       + ("" if d["corpus_created"] else " (contexts already in the store)"))


@app.command("parquet")
@handle_errors
def parquet(path: Annotated[Path, typer.Argument(help="Folder with activations.parquet + contexts.parquet, "
                                                 "or the activations file.")],
            store: StoreOpt,
            dictionary: Annotated[str, typer.Option("--dictionary", help="Name for the new dictionary.")],
            contexts: Annotated[Path | None, typer.Option(help="contexts.parquet, if not beside the activations.")] = None,
            width: Annotated[int | None, typer.Option(help="Number of features (default: dictionary.json or max id + 1). "
                                                    + WIDTH_RULE)] = None,
            model: Annotated[str | None, typer.Option(help="Model the activations came from.")] = None,
            hook: Annotated[str | None, typer.Option(help="Hook point they were read at.")] = None,
            tokenizer: Annotated[Path | None, typer.Option(help="Tokenizer folder, when contexts have no 'tokens' column.")] = None,
            replace: ReplaceOpt = False, as_json: JsonOpt = False) -> None:
    """Ingest activations in the Parquet long format (docs/reference/formats.md), atomically."""
    check_width(width)
    with opened(store, create=True) as s:
        out = ingest_parquet(s, path, dictionary=dictionary, contexts=contexts, width=width, model=model, hook=hook,
                             tokenizer=str(tokenizer) if tokenizer else None, replace=replace,
                             progress=show_progress(as_json))
    if as_json:
        emit_json({"store": str(store), "ingested": [out]})
    else:
        typer.echo(f"ingested {out['dictionary']}: {out['width']} features, {out['nonzeros']:,} nonzeros over "
                   f"{out['contexts']:,} contexts")


@app.command("neuronpedia")
@handle_errors
def neuronpedia(path: Annotated[Path, typer.Argument(help="A Neuronpedia export source folder (v1/MODEL/SOURCE) or "
                                                      "activations batch file, an SAEDashboard batch-N.json "
                                                      "folder or file, or Neuronpedia feature JSON.")],
                store: StoreOpt,
                dictionary: Annotated[str, typer.Option("--dictionary", help="Name for the new dictionary.")],
                width: Annotated[int | None, typer.Option(help="Number of features (default: max index + 1). "
                                                        + WIDTH_RULE)] = None,
                model: Annotated[str | None, typer.Option(help="Model name (default: the files' modelId).")] = None,
                hook: Annotated[str | None, typer.Option(help="Hook or source id (default: the files' layer).")] = None,
                replace: ReplaceOpt = False, as_json: JsonOpt = False) -> None:
    """Ingest feature activations as Neuronpedia or SAEDashboard publish them, atomically."""
    check_width(width)
    with opened(store, create=True) as s:
        out = ingest_neuronpedia(s, path, dictionary=dictionary, width=width, model=model, hook=hook, replace=replace)
    if as_json:
        emit_json({"store": str(store), "ingested": [out]})
    else:
        typer.echo(f"ingested {out['dictionary']}: {out['width']} features, {out['nonzeros']:,} nonzeros from "
                   f"{out['records']:,} activation records over {out['contexts']:,} distinct texts"
                   + (f" ({out['negatives_dropped']:,} negative values dropped)" if out["negatives_dropped"] else ""))


@app.command("labels")
@handle_errors
def labels(path: Annotated[Path, typer.Argument(help="neuronpedia: an export source folder (explanations/, "
                                                "explanation_scores/) or a batch file; delphi: its results "
                                                "folder or explanations folder; jsonl: our export.")],
           store: StoreOpt,
           format: Annotated[str, typer.Option("--format", help="neuronpedia | delphi | jsonl")],
           dictionary: Annotated[str | None, typer.Option("--dictionary", help=(
               "Dictionary name (default: the store's only one). jsonl: each line goes to the dictionary its "
               "'dictionary' field names; this one takes the lines that name none, and a line naming another "
               "is refused."))] = None,
           no_index: Annotated[bool, typer.Option("--no-index", help="Do not embed the labels for search now "
                                                  "(`autointerp search` does it on first use).")] = False,
           as_json: JsonOpt = False) -> None:
    """Import labels made elsewhere (with their grades and provenance), atomically; grade them with
    `label --explainer imported --scorer ...`. jsonl: each line goes to the dictionary it names (an export of
    several dictionaries goes back into each); a line naming a dictionary the store lacks, or another than
    --dictionary, stops the import (exit 4, naming the file, line and dictionary; nothing written)."""
    from ..ingest.labels import FORMATS, import_labels
    from ..progress import Progress
    from ..search import index_missing

    check_choice(format, FORMATS, "--format")
    with opened(store) as s:
        bar = Progress(0, "import labels", "label", show_progress(as_json))
        try:
            out = import_labels(s, path, format, dictionary, progress=bar)
        finally:
            bar.close()
        written = out.pop("dictionary_ids")
        if not no_index:  # the new labels' search vectors, in commits of their own (readers go on between)
            for did in written:
                index_missing(s, did)
        out["indexed"] = not no_index
    if as_json:
        emit_json(out)
    else:
        typer.echo(f"imported {out['labels']:,} labels of {out['features']:,} features ({out['scores']:,} grades) "
                   f"into {out['dictionary']} from {out['source']}")
