"""Calibration benchmark: the built-in library of planted features on two corpora, every offline scorer and
the offline explainer, and optionally the real Gemma 3 270M as an LLM scorer on a slice.

    python eval/calibrate.py [--out DIR] [--max-tokens 40000] [--seeds 3] [--budgets 10,20,40,all] [--json]
    python eval/calibrate.py --gemma            # also Gemma 3 270M through llama-cpp-python's server, on a slice

For each corpus (the bundled docs of Python's standard library; the licence texts Debian ships in
/usr/share/common-licenses, made by eval/make_corpus.py --licenses: legal English, another genre) this
captures the layer-2 MLP neurons of the bundled all-MiniLM-L6-v2 over `--max-tokens` tokens (any dictionary
would do: calibration plants its own features on the dictionary's corpus), runs `autointerp calibrate`
(its table is printed), and labels the MiniLM neurons with the offline explainer and simulation scorer to
give the offline labelling cost (ms per labelled feature) and the share of labels that are only a list of
tokens or words (no context, span or topic).

--gemma starts llama-cpp-python's server on loopback with the packaged Gemma 3 270M (tests/llama_server.py)
and calibrates its JSON simulator (no logprobs: see README, "What a self-hosted scorer needs") on four
rules (two word classes, two context rules), one seed, 10 held-out windows a grade: a slice, since the model
writes ~1,000 tokens a grade on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from autointerp.calibrate import CalibrateConfig, calibrate
from autointerp.calibrate.rules import BUILTIN
from autointerp.cli.calibrate import parse_budgets, render
from autointerp.llm import LLMOptions
from autointerp.pipeline import LabelRun, label
from autointerp.score import ScoringOptions
from autointerp.store import open_store

GEMMA_RULES = ("negations", "prepositions", "after-the", "sentence-end")
LIST_ONLY = re.compile(r'^(?:the (?:tokens?|words?)|tokens such as) (?:"[^"]*"(?:, )?)+(?:, (?:as in|after) .*)?$')


def corpora(out: Path) -> dict[str, Path]:
    found = {"stdlib_docs": ROOT / "autointerp" / "data" / "stdlib_docs.txt"}
    lic = out / "licenses.txt"
    if not lic.exists() and Path("/usr/share/common-licenses").is_dir():
        subprocess.run([sys.executable, str(ROOT / "eval" / "make_corpus.py"), "--licenses", str(lic)], check=True,
                       capture_output=True)
    if lic.exists():
        found["licenses"] = lic
    return found


def captured(path: Path, corpus: Path, max_tokens: int) -> None:
    from autointerp.capture import CaptureConfig, capture
    from autointerp.capture.model import bundled_model_path

    with open_store(path) as s:
        if not s.dictionaries():
            capture(s, CaptureConfig(model=bundled_model_path(), corpus=corpus, dictionary="neurons",
                                     neurons=("encoder.layer.2.intermediate",), max_tokens=max_tokens, device="cpu"))


def labelling(path: Path) -> dict:
    """Label every neuron offline (simulation graded): ms per labelled feature, and the labels' shapes."""
    with open_store(path) as s:
        d = s.dictionary("neurons")
        t0 = time.perf_counter()
        out = label(s, d, LabelRun(scorers=("simulation",), force=True))
        seconds = time.perf_counter() - t0
        texts = [r["explanation"] for r in s.labels.find(d.dictionary_id) if r["explainer"] == "offline"]
    first = [t.split(";")[0] for t in texts]
    return {"labelled": out.explained, "ms_per_feature": round(1000 * seconds / max(out.explained, 1), 2),
            "starts_the_tokens": sum(t.startswith("the tokens") for t in texts),
            "token_or_word_list_only": sum(bool(LIST_ONLY.match(t)) for t in first),
            "names_context_span_or_topic": sum(not LIST_ONLY.match(t) and not t.startswith("no clear") for t in first),
            "total": len(texts)}


def gemma_slice(path: Path, folder: Path) -> dict:
    from llama_server import MODEL, LlamaServer, gguf

    rules = folder / "gemma-rules.toml"
    blocks = BUILTIN.read_text().split("[[rule]]")
    rules.write_text("".join("[[rule]]" + b for b in blocks[1:] if any(f'name = "{n}"' in b for n in GEMMA_RULES)))
    server = LlamaServer(gguf(folder), folder / "llama.log")
    try:
        server.wait_ready()
        t0 = time.perf_counter()
        with open_store(path) as s:
            cal = calibrate(s, s.dictionary("neurons"), CalibrateConfig(
                rules=rules, builtin=False, scorers=("simulation",), scorer_model=f"compat:{MODEL}", explainers=(),
                seeds=1, budgets=(10,), unrelated=0, llm=LLMOptions(base_url=server.url, logprobs=False),
                scoring=ScoringOptions(windows=None, windows_per_call=10)))
        doc = cal.to_dict()
        doc["wall_seconds"] = round(time.perf_counter() - t0, 1)
        doc["failed_grades"] = sum(g.status == "failed" for g in cal.grades)
        doc["grades"] = len(cal.grades)
        return doc
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="folder for the stores (default: a temporary one)")
    ap.add_argument("--max-tokens", type=int, default=40_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budgets", default="10,20,40,all")
    ap.add_argument("--scorers", default="simulation,embedding")
    ap.add_argument("--gemma", action="store_true", help="also Gemma 3 270M as the scorer, on a slice")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        result: dict = {}
        for name, corpus in corpora(out).items():
            path = out / f"{name}.duckdb"
            captured(path, corpus, a.max_tokens)
            with open_store(path) as s:
                cal = calibrate(s, s.dictionary("neurons"), CalibrateConfig(
                    scorers=tuple(a.scorers.split(",")), seeds=a.seeds, budgets=parse_budgets(a.budgets)))
            doc = cal.to_dict()
            result[name] = {"calibration": doc, "labelling": labelling(path)}
            if not a.json:
                print(f"\n== {name} ({corpus.name}, {a.max_tokens:,} tokens) ==\n{render(doc)}")
                print(f"offline labelling: {json.dumps(result[name]['labelling'])}")
            if a.gemma and name == "stdlib_docs":
                result["gemma"] = gemma_slice(path, out)
                if not a.json:
                    print(f"\n== Gemma 3 270M (llama-cpp-python server, JSON simulator, no logprobs) on "
                          f"{', '.join(GEMMA_RULES)}: {result['gemma']['failed_grades']} of "
                          f"{result['gemma']['grades']} grades failed, {result['gemma']['wall_seconds']} s ==\n"
                          f"{render(result['gemma'])}")
        if a.json:
            print(json.dumps(result))


if __name__ == "__main__":
    main()
