"""Griffe extension for the API reference: autointerp's docstrings are plain text with `code` spans, not
Markdown, so a placeholder such as <scorer> is text, not an HTML tag. Outside code spans and indented
examples, `<` before a letter is escaped; nothing else changes."""

from __future__ import annotations

import re

import griffe

_TAG = re.compile(r"<(?=[A-Za-z/!])")


def plain(text: str) -> str:
    lines = []
    for line in text.split("\n"):
        if line.startswith("    "):  # an indented example: a code block
            lines.append(line)
            continue
        parts = line.split("`")
        parts[::2] = [_TAG.sub("&lt;", p) for p in parts[::2]]
        lines.append("`".join(parts))
    return "\n".join(lines)


class PlainDocstrings(griffe.Extension):
    def on_instance(self, *, node, obj, agent, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
