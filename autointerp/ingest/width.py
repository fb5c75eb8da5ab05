"""How wide an ingested dictionary may be.

A dictionary's width comes from its metadata (Parquet's dictionary.json, delphi's shard names) or
`--width`; a feature index at or past it is a one-line IngestError naming the file and the index.
With no width given, the width is the highest index + 1, unless that index is implausible: past
`PLAUSIBLE_WIDTH`, or a stray far beyond every other index (one bad record would otherwise make a
dictionary of millions of features that are never there, and every later `label` would walk them).
"""

from __future__ import annotations

from ..errors import IngestError

STORE_MAX_WIDTH = 2**32 - 1  # the store's width and feature columns are 32-bit unsigned
PLAUSIBLE_WIDTH = 2**26  # twice the widest dictionary published (~34M latents): past it, only --width says so
STRAY_GAP = 1024  # an index more than 2 x (the next highest + 1) + this is a stray, not the dictionary's last
STRAY_FROM = 2**20  # ... when it would make a dictionary of a million features or more (a partial export of a
                    # smaller dictionary, e.g. features 5 and 16000 of a 16k SAE, is never called a stray)


def checked_width(width, what: str, error: type[Exception] = IngestError) -> int:
    """A width given by `--width` or metadata (`what` names it): a whole number from 1 to STORE_MAX_WIDTH."""
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= STORE_MAX_WIDTH:
        raise error(f"{what} must be a whole number of features from 1 to {STORE_MAX_WIDTH:,}, not {width!r}")
    return width


def outside(where: str, index: int, width: int, what: str = "--width") -> IngestError:
    """The error for a feature index at or past a width that was given."""
    return IngestError(f"{where}: feature index {index} is outside {what} {width} (features 0..{width - 1})")


def implausible(where: str, index: int) -> IngestError | None:
    """The error for an index past PLAUSIBLE_WIDTH when no width was given (None: it is plausible)."""
    if index < PLAUSIBLE_WIDTH:
        return None
    return IngestError(f"{where}: feature index {index} is beyond {PLAUSIBLE_WIDTH} (2^26) features, more than any "
                       "dictionary: pass --width if the dictionary really is that wide")


def inferred_width(top: int, second: int | None, where: str) -> int:
    """The width when none is given: the highest index `top` + 1. `second`: the next highest distinct index
    (None: there is none). A `top` past PLAUSIBLE_WIDTH, or far beyond `second`, is an error naming `where`
    (the record, file or shard that holds it)."""
    if (e := implausible(where, top)) is not None:
        raise e
    if second is not None and top >= STRAY_FROM and top > 2 * (second + 1) + STRAY_GAP:
        raise IngestError(f"{where}: feature index {top} is far beyond every other (the next highest is {second}): "
                          f"it would make a dictionary of {top + 1} features; pass --width if it really is that wide")
    return top + 1
