"""Typed errors. Each carries a one-line message naming the problem; the CLI prints it and exits non-zero."""


class AutointerpError(Exception):
    """Base of every error autointerp raises on purpose (bad input, bad store, bad config)."""

    exit_code = 1


class StoreError(AutointerpError):
    """The store file cannot be used: newer schema, missing dictionary, locked, corrupt."""

    exit_code = 3


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


class ExplainFailure(Exception):
    """An explainer could not label one feature (no firing token, an unparseable reply, a spent retry budget).

    Not a run error: the pipeline records it as that feature's typed "failed" outcome and goes on.
    """
