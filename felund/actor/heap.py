"""Giving the C heap's free pages back to the kernel (glibc's ``malloc_trim``).

glibc returns freed memory on its own only from the top of the heap, so a
burst of work (a backlog, 10,000 appends) leaves megabytes of free pages
resident between the chunks still in use. ``malloc_trim(0)`` releases every
free page. Elsewhere (no glibc) ``release`` does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release() -> None:
    """Return the heap's free pages to the kernel (a few ms; do it when idle)."""
    if _TRIM is not None:
        _TRIM(0)
