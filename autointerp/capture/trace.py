"""`trace`: a text in, its labelled features out, token by token (the "MRI" view).

A dictionary captured from a local model (`capture`: raw neurons, or an SAE's latents) knows its model, its
hook, its SAE folder and its threshold. A `Tracer` loads them once and runs a text through them exactly as
capture ran the corpus (the tokenizer's special tokens around it, never recorded; values above the
dictionary's threshold kept), and `trace_text` names, per token, the `top` features by value with their
current labels. A dictionary ingested from elsewhere (delphi, Parquet, Neuronpedia) has no model here:
tracing it is a CaptureError that says so. The text is bounded (`TraceConfig.max_chars`, and the model's
positions), so one request cannot hold a server for long.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from ..errors import CaptureError, UsageError
from ..ingest.tokens import TokenStrings
from ..records import Dictionary, TraceConfig
from ..store import Store
from .corpus import special_template
from .model import load_model, resolve_hook, run_hooked
from .sae import load_sae

MAX_TOKENS = 512


class Tracer:
    """A captured dictionary's model, hook and SAE, loaded once (a server keeps one per dictionary and runs
    one text at a time through it)."""

    def __init__(self, d: Dictionary) -> None:
        if d.kind not in ("sae", "neurons"):
            raise CaptureError(f"dictionary {d.name!r} was ingested ({d.kind}), not captured from a local model: "
                               "trace needs the model it was captured from (`autointerp capture`)")
        model = Path(d.model)
        if not model.exists():
            raise CaptureError(f"dictionary {d.name!r} was captured from {model}, which is no longer there")
        self.dictionary = d
        self.net, self.tokenizer = load_model(model)
        self.point = resolve_hook(self.net, d.hook)
        self.sae = None
        if d.kind == "sae":
            self.sae = load_sae(d.source)
            if self.sae.d_sae != d.width:
                raise CaptureError(f"the SAE at {d.source} has {self.sae.d_sae} latents but dictionary {d.name!r} "
                                   f"{d.width}: it is not the SAE the dictionary was captured with")
        self.threshold = float(d.config.get("threshold", 0.0) or 0.0)
        positions = getattr(self.net.config, "max_position_embeddings", None)
        self.max_tokens = min(positions, MAX_TOKENS) if isinstance(positions, int) else MAX_TOKENS
        self.prefix, self.suffix = special_template(self.tokenizer)
        self.strings = TokenStrings(self.tokenizer, str(model))
        self.special = set(self.tokenizer.all_special_ids)  # never recorded by capture: never traced
        self.width = self.sae.d_in if self.sae is not None else d.width  # what the hook must give

    def run(self, text: str) -> tuple[list[str], dict[str, np.ndarray]]:
        """(the text's tokens, the nonzero activations {position, feature, value} in position order, then
        by value descending). Positions count the text's own tokens from 0 (special tokens dropped)."""
        body = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        ids = self.prefix + body + self.suffix
        if not body:  # only characters the tokenizer drops (controls): nothing fires
            empty = np.zeros(0, np.int64)
            return [], {"position": empty, "feature": empty, "value": np.zeros(0, np.float32)}
        if len(ids) > self.max_tokens:
            raise UsageError(f"the text is {len(ids)} tokens; trace takes at most {self.max_tokens}")
        with torch.no_grad():
            x = run_hooked(self.net, self.point, torch.tensor([ids], dtype=torch.long))
            if x.shape[-1] != self.width:
                raise CaptureError(f"hook {self.dictionary.hook} of {self.dictionary.model} gives {x.shape[-1]} "
                                   f"values a token but dictionary {self.dictionary.name!r} was captured from "
                                   f"{self.width}: not the model it was captured from")
            acts = (self.sae.encode(x) if self.sae is not None else x)[0, len(self.prefix):len(self.prefix) + len(body)]
        keep = (acts > self.threshold) & torch.tensor([t not in self.special for t in body])[:, None]
        at, latent = torch.nonzero(keep, as_tuple=True)
        values = acts[at, latent].numpy().astype(np.float32)
        pos, feat = at.numpy().astype(np.int64), latent.numpy().astype(np.int64)
        order = np.lexsort((-values, pos))
        tokens = self.strings(np.asarray([body], np.int64))[0]
        return tokens, {"position": pos[order], "feature": feat[order], "value": values[order]}


def trace_text(store: Store, tracer: Tracer, text: str, config: TraceConfig = TraceConfig()) -> dict:
    """The text's tokens, each with its `top` features (value and current label), and the whole sparse
    activation matrix ({position, feature, value}, every nonzero)."""
    if len(text) > config.max_chars:
        raise UsageError(f"the text is {len(text):,} characters; trace takes at most {config.max_chars:,}")
    if not text.strip():
        raise UsageError("the text is empty")
    d = tracer.dictionary
    tokens, m = tracer.run(text)
    starts = np.searchsorted(m["position"], np.arange(len(tokens) + 1))
    top = [(int(starts[i]), int(min(starts[i + 1], starts[i] + config.top))) for i in range(len(tokens))]
    shown = sorted({int(f) for lo, hi in top for f in m["feature"][lo:hi]})
    labels: dict[int, tuple[str, datetime]] = {}  # feature -> (explanation, created_at)
    for r in store.labels.find(d.dictionary_id, shown):  # newest chosen label of each feature
        if r["feature_id"] not in labels or r["created_at"] > labels[r["feature_id"]][1]:
            labels[r["feature_id"]] = (r["explanation"], r["created_at"])
    return {"dictionary": d.name, "text": text, "tokens": tokens,
            "top": [[{"feature": int(f), "value": round(float(v), 4),
                      "label": labels[int(f)][0] if int(f) in labels else None}
                     for f, v in zip(m["feature"][lo:hi], m["value"][lo:hi])] for lo, hi in top],
            "matrix": {"position": m["position"].tolist(), "feature": m["feature"].tolist(),
                       "value": [round(float(v), 4) for v in m["value"]]} if config.matrix else None}
