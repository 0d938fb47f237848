"""A message's inline Markdown and @mentions as styled segments (sans-IO).

The subset the other felund clients render: ``**bold**``, ``*italic*``,
`` `code` `` and ``~~strike~~``, not nested (a code span shows its text as
written); the markers are dropped. A mention of this node's name (``@name``
or the name alone, as a word, any case) is styled ``mention``. Anything
else, an unpaired marker included, shows as typed.
"""

from __future__ import annotations

import functools
import re
from typing import Final

from felund.ui.text import Segment

STYLES: Final = {"**": "bold", "*": "italic", "`": "code", "~~": "strike"}
# Longest markers first; the text inside is not empty and does not start or end
# with a space (``2 * 3 * 4`` stays arithmetic).
_SPAN = re.compile(r"`([^`\n]+)`|\*\*(\S(?:.*?\S)?)\*\*|~~(\S(?:.*?\S)?)~~|\*(\S(?:[^*]*?\S)?)\*")
_MARKERS = ("`", "**", "~~", "*")


@functools.lru_cache(maxsize=64)
def _mention_re(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w@])@?{re.escape(name)}(?!\w)", re.IGNORECASE)


def mentions(text: str, name: str) -> bool:
    """Whether ``text`` names ``name`` (``@name``, or the name as a word)."""
    return bool(name.strip()) and _mention_re(name.strip()).search(text) is not None


def inline(text: str, base: str, name: str = "") -> list[Segment]:
    """``text`` as segments: its Markdown spans styled ``base.bold`` etc., mentions of
    ``name`` styled ``mention``, the rest ``base``."""
    out: list[Segment] = []
    at = 0
    for span in _SPAN.finditer(text):
        out += _plain(text[at : span.start()], base, name)
        i = next(i for i in range(4) if span.group(i + 1) is not None)
        inner, style = span.group(i + 1), f"{base}.{STYLES[_MARKERS[i]]}"
        out += [(inner, style)] if i == 0 else _plain(inner, style, name)
        at = span.end()
    out += _plain(text[at:], base, name)
    return out


def _plain(text: str, style: str, name: str) -> list[Segment]:
    if not text:
        return []
    if not name.strip():
        return [(text, style)]
    out: list[Segment] = []
    at = 0
    for found in _mention_re(name.strip()).finditer(text):
        if found.start() > at:
            out.append((text[at : found.start()], style))
        out.append((found.group(), "mention"))
        at = found.end()
    if at < len(text):
        out.append((text[at:], style))
    return out
