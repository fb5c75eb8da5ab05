"""The demo job: label a real model's features end to end, offline, in a couple of minutes.

Captures the layer-2 MLP neurons of the bundled all-MiniLM-L6-v2 over the bundled corpus (docstrings of
Python's standard library, PSF-2.0), labels every neuron with the offline explainer, grades every label
with the offline embedding and simulation scorers, and writes the JSONL export. Rerunning it resumes:
the capture is kept and only unlabelled features are done.
"""

from __future__ import annotations

import time
from pathlib import Path

from .capture.model import BUNDLED_MODEL, bundled_model_path
from .export import write_jsonl
from .pipeline import LabelRun, label
from .store import open_store

CORPUS = Path(__file__).parent / "data" / "stdlib_docs.txt"
HOOK = "encoder.layer.2.intermediate"
DICTIONARY = f"{BUNDLED_MODEL}/{HOOK}/neurons"
SCORERS = ("embedding", "simulation")


def run_demo(store_path: str | Path, out: str | Path, *, max_tokens: int = 20_000, show: int = 5,
             progress: bool = False) -> dict:
    """Capture (unless already captured), label, export. Returns the summary with the best and worst labels."""
    from .capture import CaptureConfig, capture

    t0 = time.perf_counter()
    with open_store(store_path) as s:
        captured = None
        if not any(d.name == DICTIONARY for d in s.dictionaries()):
            captured = capture(s, CaptureConfig(model=bundled_model_path(), corpus=CORPUS, hook=HOOK, neurons=True,
                                                dictionary=DICTIONARY, max_tokens=max_tokens), progress=progress)
        t_capture = time.perf_counter() - t0
        d = s.dictionary(DICTIONARY)
        summary = label(s, d, LabelRun(scorers=SCORERS), progress=progress).to_dict()
        # ranked by the lower end of the 95% interval: a label is "best" when it is surely good
        ranked = {order: [_brief(r) for r in s.labels(d.dictionary_id, sort_by="simulation", descending=desc,
                                                          limit=show, by=by)]
                  for order, desc, by in (("best", True, "lower"), ("worst", False, "value"))}
        lines = write_jsonl(s, out, DICTIONARY)
    return {"store": str(store_path), "out": str(out), "lines": lines, "corpus": str(CORPUS),
            "corpus_licence": "PSF-2.0", "captured": captured, "label": summary, **ranked,
            "seconds": {"capture": round(t_capture, 1), "total": round(time.perf_counter() - t0, 1)}}


def _brief(row: dict) -> dict:
    return {"feature": row["feature_id"], "explanation": row["explanation"],
            **{k: v["value"] for k, v in row["scores"].items()},
            **{f"{k}_ci": v["ci"] for k, v in row["scores"].items()}}
