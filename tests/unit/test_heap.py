"""``felund.actor.heap.release``: the C heap's free pages go back to the kernel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from felund.actor import heap

BLOCK = 32 * 1024  # under glibc's mmap threshold: from the heap, which a free never shrinks


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(heap._TRIM is None, reason="not glibc")
def test_pages_freed_between_live_blocks_are_released() -> None:
    blocks = [bytearray(os.urandom(16) * (BLOCK // 16)) for _ in range(2000)]  # ~64 MB touched
    kept = blocks[9::10]  # one block in ten stays: the heap's top never frees
    del blocks
    freed = 1800 * BLOCK
    before = _rss()
    heap.release()
    assert before - _rss() > freed // 2
    assert len(kept) == 200
