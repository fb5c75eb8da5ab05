"""Write eval/data/stdlib_docs.txt: docstrings of Python's standard library, one paragraph per line.

The text is the Python documentation's own (PSF License Agreement, PSF-2.0), available offline on any
machine with Python. Reproduce with: python eval/make_corpus.py
"""

import importlib
import inspect
import re
import sys
from pathlib import Path

MODULES = ["collections", "json", "pathlib", "functools", "itertools", "textwrap", "string", "datetime",
           "argparse", "logging", "re", "csv", "random", "statistics", "fractions", "decimal", "heapq",
           "bisect", "shutil", "tempfile", "subprocess", "threading", "queue", "socket", "email.message",
           "http.client", "urllib.parse", "unittest", "difflib", "calendar", "zipfile", "tarfile", "gzip"]


def paragraphs(obj) -> list[str]:
    doc = inspect.getdoc(obj) or ""
    out = []
    for para in re.split(r"\n\s*\n", doc):
        text = " ".join(para.split())
        if len(text.split()) >= 8 and not text.startswith((">>>", "...")):
            out.append(text)
    return out


def main() -> None:
    lines: list[str] = []
    seen = set()
    for name in MODULES:
        mod = importlib.import_module(name)
        for obj in [mod] + [v for _, v in sorted(vars(mod).items()) if (inspect.isclass(v) or inspect.isfunction(v))
                            and getattr(v, "__module__", None) == mod.__name__]:
            for p in paragraphs(obj):
                if p not in seen:
                    seen.add(p)
                    lines.append(p)
    out = Path(__file__).parent / "data" / "stdlib_docs.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} paragraphs ({sum(len(x.split()) for x in lines)} words) from Python "
          f"{sys.version.split()[0]} to {out}")


if __name__ == "__main__":
    main()
