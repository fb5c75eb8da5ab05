"""`autointerp export` and `autointerp serve`: labels out of the store, as files or as a live browser."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ExportError, LabelError
from ..export import write_html, write_jsonl, write_neuronpedia, write_parquet
from .common import (
    CandidatesOpt,
    DeviceOpt,
    DictOpt,
    JsonOpt,
    StoreOpt,
    check_choice,
    check_features,
    emit_json,
    encoder_device,
    handle_errors,
    no_space_names,
    opened,
)

EXPORT_FORMATS = ("jsonl", "parquet", "neuronpedia", "html", "calibration")


def check_out(out: Path, folder: bool) -> None:
    """--out names a file (jsonl, parquet) or a folder (neuronpedia, html) whose parent folder exists."""
    if not out.parent.is_dir():
        raise ExportError(f"--out {out}: folder {out.parent} does not exist")
    if not folder and out.is_dir():
        raise ExportError(f"--out {out} is a folder: this format writes one file")
    if folder and out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file: this format writes a folder")


@handle_errors
def export(store: StoreOpt, out: Annotated[Path, typer.Option("--out", help="File (jsonl, parquet) or folder "
                                                               "(neuronpedia, html) to write.")],
           format: Annotated[str, typer.Option("--format", help="jsonl | parquet: labels, scores and provenance, one "
                                                                "per (feature, explanation); neuronpedia: its dataset "
                                                                "layout; html: a static feature browser; "
                                                                "calibration: every `calibrate` run, JSON.")] = "jsonl",
           dictionary: DictOpt = None, candidates: CandidatesOpt = False,
           features: Annotated[str | None, typer.Option("--features", help="html: only these features, e.g. "
                                                         "0-99,123 (default: every labelled one).")] = None,
           all_features: Annotated[bool, typer.Option("--all-features", help="html: unlabelled features get "
                                                      "pages too.")] = False,
           no_activations: Annotated[bool, typer.Option("--no-activations", help="neuronpedia: features, "
                                                        "explanations and scores only, no activation windows.")] = False,
           model_id: Annotated[str | None, typer.Option(help="neuronpedia: the model's id there, e.g. gpt2-small.")] = None,
           source_id: Annotated[str | None, typer.Option(help="neuronpedia: the source (SAE) id, e.g. 6-res-jb.")] = None,
           as_json: JsonOpt = False) -> None:
    """Write labels, scores and provenance out of the store. One export to a path at a time: a second one to
    the same --out while the first writes stops at once with one line (exit 8), writing nothing."""
    check_choice(format, EXPORT_FORMATS, "--format")
    check_out(out, folder=format in ("neuronpedia", "html"))
    check_features(features)
    if format == "neuronpedia" and (not model_id or not source_id):
        raise ExportError("--format neuronpedia needs --model-id and --source-id (Neuronpedia's names)")
    with opened(store, read_only=True) as s, no_space_names(out):
        if format == "neuronpedia":
            res = write_neuronpedia(s, out, model_id=model_id, source_id=source_id, dictionary=dictionary,
                                    candidates=candidates, activations=not no_activations)
            text = (f"wrote {res['features']} features, {res['explanations']} explanations, {res['scores']} scores "
                    f"and {res['activations']} activation windows to {res['out']}")
        elif format == "html":
            from ..pipeline import parse_features
            from ..progress import Progress

            d = s.dictionary(dictionary)
            try:
                subset = None if features is None else parse_features(features, d.width)
            except LabelError as e:  # an id past the dictionary: export's error, not label's
                raise ExportError(str(e)) from None
            bar = Progress(0, "export html", "feat", not as_json)
            t0 = time.perf_counter()
            try:
                res = write_html(s, out, dictionary, subset, all_features, bar)
            finally:
                bar.close()
            res["seconds"] = round(time.perf_counter() - t0, 1)
            per = max(res["pages"], 1)
            text = (f"wrote a browser of {res['listed']:,} of {res['features']:,} features ({res['pages']:,} pages "
                    f"in {res['feature_files']:,} files of at most {res['largest_feature_file'] / 1e3:,.0f} KB; "
                    f"{res['bytes'] / 1e6:,.1f} MB in all, {res['bytes'] / 1e3 / per:,.1f} KB a page; "
                    f"{1000 * res['seconds'] / per:,.1f} s per 1,000 pages) to {res['out']}; open "
                    f"{Path(res['out']) / 'index.html'}" + (f" (its index holds the first {res['index_rows']:,}: "
                                                            "`autointerp serve` shows all)" if res["capped"] else ""))
        elif format == "calibration":
            from ..export import write_calibration

            n = write_calibration(s, out)
            res, text = {"out": str(out), "format": format, "runs": n}, f"wrote {n} calibration runs to {out}"
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
          port: Annotated[int, typer.Option(help="Port (0: any free one).")] = 8000,
          allowed_host: Annotated[list[str] | None, typer.Option(
              "--allowed-host", metavar="NAME",
              help="Also answer requests whose Host header is NAME (repeat for several). Always answered: "
                   "localhost, 127.0.0.1, [::1] and the --host address; with --host 0.0.0.0 (or ::), also this "
                   "machine's hostname and any IP address. Any other Host is refused (400): a web page on another "
                   "name cannot reach the API by DNS rebinding.")] = None,
          device: DeviceOpt = "auto") -> None:
    """Browse a store's features live (read-only): the browser's pages (plots, search, a coloured trace) and a
    JSON API (/api/..., documented at /openapi.json and /api/docs), served from the store. The served
    dictionary's model is loaded as it starts, so the first trace does not wait for it."""
    encoder_device(device)
    from ..export.serve import make_server

    if not 0 <= port <= 65535:
        raise typer.BadParameter(f"--port must be 0..65535, got {port}")
    with opened(store, read_only=True) as s:
        try:
            server = make_server(s, dictionary, host, port, allowed_host or (), warm=True)
        except OSError as e:
            raise ExportError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        typer.echo(f"serving {server.dictionary.name} from {store} at {server.url} (API: {server.url}api/docs; "
                   "Ctrl-C to stop)")
        server.serve()
