"""Typed errors. Each carries a one-line message naming the problem; the CLI prints it and exits non-zero."""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class AutointerpError(Exception):
    """Base of every error autointerp raises on purpose (bad input, bad store, bad config)."""

    exit_code = 1


class UsageError(AutointerpError):
    """A bad option value (a negative limit, an unknown sort key, a reversed feature range)."""

    exit_code = 2


class StoreError(AutointerpError):
    """The store file cannot be used: newer schema, missing dictionary, locked, corrupt."""

    exit_code = 3


class StoreBusy(StoreError):
    """Another writer holds the store (one at a time), or a long transaction kept a reader out past its wait."""


class StoreCorrupt(StoreError):
    """The file is damaged or is not a DuckDB store: never reported as "in use"."""


class DiskFull(AutointerpError):
    """No space left where the store (or an export) is written; the transaction was rolled back."""

    exit_code = 10


class OlderStoreError(StoreError):
    """A store made by an earlier autointerp, opened read-only: it must be opened once for writing (which
    migrates it) before it can be read. The CLI does that by itself."""


class IngestError(AutointerpError):
    """Input data is malformed; the ingest was rolled back and the store is unchanged."""

    exit_code = 4


class CaptureError(AutointerpError):
    """Live capture cannot run: unknown hook, SAE/model mismatch, empty corpus, bad SAE folder."""

    exit_code = 5


class SampleError(AutointerpError):
    """A sampling request cannot be served (unknown feature, bad config)."""

    exit_code = 6


class LabelError(AutointerpError):
    """A labelling request cannot run (unknown explainer or scorer, features out of range, bad format)."""

    exit_code = 7


class ExportError(AutointerpError):
    """An export cannot be written (bad names, a folder that is not ours to replace); nothing was changed."""

    exit_code = 8


class MatchError(AutointerpError):
    """Two dictionaries cannot be paired (other corpora, directions of other widths, the same dictionary)."""

    exit_code = 9


class CalibrationError(AutointerpError):
    """A rule of planted features is malformed, or fires nowhere or everywhere in the corpus; nothing was written."""

    exit_code = 11


class ExplainFailure(Exception):
    """An explainer could not label one feature (no firing token, an unparseable reply, a spent retry budget).

    Not a run error: the pipeline records it as that feature's typed "failed" outcome and goes on.
    """


# What a run's outcome exits with (`label` and `job run` alike); each code is explained in EXIT_CODES.
EXIT = {"done": 0, "error": 1, "could_not_start": 20, "budget": 21, "failed": 22, "interrupted": 23}

# Every exit code of every command, in one place: README's table and `autointerp --help` are made from it.
EXIT_CODES: dict[int, str] = {
    0: "done: every selected feature has a label and every grade (or a reason it has none)",
    1: "an unexpected error (a bug: the traceback is printed, or logged by a job)",
    2: "bad usage, whatever the command (a Python API call raises UsageError for the same values): an unknown "
       "option; a value out of its range or of the wrong kind (negative `--limit`, `--window 1`, `--concurrency 0`, "
       "`--min-similarity 2`, `--min-evidence 0`, a seed past 64 bits, NaN); an unknown explainer, scorer, prompt "
       "name or `--sort`; a model without its provider (`gpt-4o` for `openai:gpt-4o`); a feature id past the "
       "dictionary's width; reversed `--features 5-2`; options that do not go together; a `--width` the store "
       "cannot hold",
    3: "store: missing (a typo never makes an empty store), held by another writer (the message names it), damaged, "
       "newer, or no such dictionary",
    4: "ingest: malformed input (a feature index past the dictionary's width, or with no width a stray one past "
       "2^26 or far beyond the others; a labels line naming a dictionary the store lacks); the store is unchanged, "
       "and a store file the ingest created is removed",
    5: "capture and trace: unknown hook or device, SAE/model mismatch, a bad SAE file or corpus, a resume whose "
       "inputs changed, a dictionary without its model (as ingest: nothing left behind)",
    6: "sample: a feature with no stored sample where one is read (`sample --feature` reads `sample --all`'s), "
       "windows whose contexts are missing from the corpus",
    7: "label: a prompt or prices file that cannot be read, a prompt of the wrong format for its use, a plugin "
       "that fails to load, a dictionary with no output tokens to show the explainer, or with no imported label "
       "for `--explainer imported`, a `--carry-from` that is "
       "the dictionary itself or lacks its match, a feature that cannot be scored (dead), a simulator reading "
       "logprobs the model does not give, an API key missing from the environment",
    8: "export: bad names, a path whose folder is missing, a folder that is not ours to replace, or another export "
       "writing the same path now (nothing written)",
    9: "match: dictionaries over other corpora, output directions of other widths, a dictionary matched with itself "
       "(nothing written)",
    10: "disk full: no space left where the store, its journal or an export is written (the message names the "
        "path and the space free); the store is unchanged and no partial file is left",
    11: "calibrate: a rule file that cannot be read, or a rule in it with an unknown kind or key, an empty word "
        "list, a regex that does not compile, has no capture group or never matches, or that fires nowhere or "
        "everywhere in the corpus (one line naming the rule; nothing written)",
    20: "job could not start: bad job file (not UTF-8 TOML, an unknown key, a value out of range), store or "
        "dictionary; an unpriced model under a dollars budget; another job or writer holds the store (the refusal "
        "is in `job list`)",
    21: "stopped by a budget, or batches still pending: run again",
    22: "finished, but some features or grades failed: `label` prints the most common reasons; run again to retry "
        "them",
    23: "interrupted (Ctrl-C, SIGTERM): what finished is committed; run again to go on",
}


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM stops the run as Ctrl-C does (KeyboardInterrupt: what finished is committed,
    exit 23); the handler before it is restored after. A no-op off the main thread, where Python cannot
    install handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
