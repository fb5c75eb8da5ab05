"""Reading a model's reply: the JSON object it was asked for, or a typed failure saying why not."""

from __future__ import annotations

import json
import re


class ReplyFailure(Exception):
    """A reply that cannot be used (prose, wrong shape, wrong length, out of range): the grade or label it
    was for is "failed" with this reason, never zeros or a guess."""


def reply_text(reply) -> str:
    """The first text of a ChatResponse ("" when there is none: an empty reply is an unusable one)."""
    return reply.texts[0] if reply.texts else ""


def json_list(reply: str, field: str) -> list:
    """The list under `field` of the JSON object in a reply (models sometimes wrap it in prose or fences)."""
    m = re.search(r"\{.*\}", reply or "", re.DOTALL)
    if not m:
        raise ReplyFailure(f"no JSON in reply: {' '.join((reply or '').split())[:60]!r}")
    try:
        doc = json.loads(m.group(0))
    except ValueError as e:
        raise ReplyFailure(f"reply is not valid JSON: {e}") from None
    out = doc.get(field) if isinstance(doc, dict) else None
    if not isinstance(out, list):
        raise ReplyFailure(f"reply has no '{field}' list")
    return out


def is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
