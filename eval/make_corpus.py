"""Make the offline text corpora, one paragraph per line.

    python eval/make_corpus.py                      # autointerp/data/stdlib_docs.txt (the bundled corpus)
    python eval/make_corpus.py --licenses OUT.txt   # a second corpus of another genre, for evaluation

stdlib_docs.txt holds the docstrings of Python's standard library: the Python documentation's own text
(PSF License Agreement, PSF-2.0), available offline on any machine with Python. The licence corpus is
the licence texts Debian ships in /usr/share/common-licenses (GPL, Apache-2.0, MPL, GFDL, Artistic, ...):
legal English, each text under its own terms (verbatim copies allowed); it is made on the machine, not
committed.
"""

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path

MODULES = ["collections", "json", "pathlib", "functools", "itertools", "textwrap", "string", "datetime",
           "argparse", "logging", "re", "csv", "random", "statistics", "fractions", "decimal", "heapq",
           "bisect", "shutil", "tempfile", "subprocess", "threading", "queue", "socket", "email.message",
           "http.client", "urllib.parse", "unittest", "difflib", "calendar", "zipfile", "tarfile", "gzip"]


def split_paragraphs(text: str, min_words: int = 8) -> list[str]:
    """Paragraphs (split at blank lines) of at least `min_words` words, whitespace joined."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        p = " ".join(para.split())
        if len(p.split()) >= min_words:
            out.append(p)
    return out


def paragraphs(obj) -> list[str]:
    """An object's docstring paragraphs, without doctest lines."""
    return [p for p in split_paragraphs(inspect.getdoc(obj) or "") if not p.startswith((">>>", "..."))]


def licenses(out: Path, folder: Path = Path("/usr/share/common-licenses")) -> None:
    lines, seen = [], set()
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.is_symlink():
            for p in split_paragraphs(f.read_text(encoding="utf-8", errors="replace")):
                if p not in seen:
                    seen.add(p)
                    lines.append(p)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} paragraphs ({sum(len(x.split()) for x in lines)} words) from {folder} to {out}")


def stdlib_docs() -> None:
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
    out = Path(__file__).resolve().parent.parent / "autointerp" / "data" / "stdlib_docs.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} paragraphs ({sum(len(x.split()) for x in lines)} words) from Python "
          f"{sys.version.split()[0]} to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description="Make the offline text corpora.")
    ap.add_argument("--licenses", type=Path, metavar="OUT", help="write the licence-text corpus to OUT instead")
    a = ap.parse_args()
    if a.licenses:
        licenses(a.licenses)
    else:
        stdlib_docs()


if __name__ == "__main__":
    main()
