"""A QR code as text lines for the terminal (sans-IO): two rows of modules per line.

Dark modules are drawn (``█ ▀ ▄``), light ones are spaces; the app draws the
``qr`` style black on white where the terminal has colours, so the code reads
the same on a dark or a light terminal.
"""

from __future__ import annotations

import functools

import segno

BORDER = 2  # light modules around the code (the standard asks 4; scanners read 2)
_HALVES = {(False, False): " ", (True, False): "\u2580", (False, True): "\u2584"}
_HALVES[(True, True)] = "\u2588"


@functools.lru_cache(maxsize=8)
def lines(text: str) -> tuple[str, ...]:
    """The QR code of ``text`` (low error correction: the smallest), empty if too long."""
    try:
        code = segno.make(text, error="l", micro=False)
    except segno.DataOverflowError:
        return ()
    matrix = [[bool(m) for m in row] for row in code.matrix_iter(scale=1, border=BORDER)]
    if len(matrix) % 2:
        matrix.append([False] * len(matrix[0]))
    return tuple(
        "".join(_HALVES[(top, bottom)] for top, bottom in zip(upper, lower, strict=True))
        for upper, lower in zip(matrix[::2], matrix[1::2], strict=True)
    )
