"""`autointerp export` and `autointerp serve`: labels out of the store, as files or as a live browser."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ExportError
from ..export import write_html, write_jsonl, write_neuronpedia, write_parquet
from .common import (
    CandidatesOpt,
    DictOpt,
    JsonOpt,
    StoreOpt,
    check_choice,
    emit_json,
    handle_errors,
    opened,
)

EXPORT_FORMATS = ("jsonl", "parquet", "neuronpedia", "html")


@handle_errors
def export(store: StoreOpt, out: Annotated[Path, typer.Option("--out", help="File (jsonl, parquet) or folder "
                                                               "(neuronpedia, html) to write.")],
           format: Annotated[str, typer.Option("--format", help="jsonl | parquet: labels, scores and provenance, one "
                                                                "per (feature, explanation); neuronpedia: its dataset "
                                                                "layout; html: a static feature browser.")] = "jsonl",
           dictionary: DictOpt = None, candidates: CandidatesOpt = False,
           model_id: Annotated[str | None, typer.Option(help="neuronpedia: the model's id there, e.g. gpt2-small.")] = None,
           source_id: Annotated[str | None, typer.Option(help="neuronpedia: the source (SAE) id, e.g. 6-res-jb.")] = None,
           as_json: JsonOpt = False) -> None:
    """Write labels, scores and provenance out of the store."""
    check_choice(format, EXPORT_FORMATS, "--format")
    if format == "neuronpedia" and (not model_id or not source_id):
        raise ExportError("--format neuronpedia needs --model-id and --source-id (Neuronpedia's names)")
    with opened(store, read_only=True) as s:
        if format == "neuronpedia":
            res = write_neuronpedia(s, out, model_id=model_id, source_id=source_id, dictionary=dictionary,
                                    candidates=candidates)
            text = (f"wrote {res['features']} features, {res['explanations']} explanations, {res['scores']} scores "
                    f"and {res['activations']} activation windows to {res['out']}")
        elif format == "html":
            res = write_html(s, out, dictionary)
            text = (f"wrote a browser of {res['features']} features ({res['pages']} with windows) to {res['out']}; "
                    f"open {Path(res['out']) / 'index.html'}")
        else:
            n = (write_jsonl if format == "jsonl" else write_parquet)(s, out, dictionary, candidates=candidates)
            res, text = {"out": str(out), "format": format, "lines": n}, f"wrote {n} labels to {out}"
    if as_json:
        emit_json(res)
    else:
        typer.echo(text)


@handle_errors
def serve(store: StoreOpt, dictionary: DictOpt = None,
          host: Annotated[str, typer.Option(help="Address to listen on (default: this machine only).")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="Port (0: any free one).")] = 8000) -> None:
    """Browse a store's features live (read-only): the static browser's pages, served from the store."""
    from ..export.serve import make_server

    with opened(store, read_only=True) as s:
        server = make_server(s, dictionary, host, port)
        typer.echo(f"serving {server.dictionary.name} from {store} at {server.url} (Ctrl-C to stop)", err=False)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
