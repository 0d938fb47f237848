"""prometheus-client's multiprocess files, with their blocks allocated before they are mapped.

prometheus-client sizes a process's file with ``truncate`` (a sparse file)
and maps it; on a full disk the first write to a page with no block behind
it is SIGBUS, which killed the store and gossip at every start. Allocating
first (``posix_fallocate``) turns that into ENOSPC, which can be answered:
the process then keeps its values in memory (not exported) and runs on.
"""

from __future__ import annotations

import contextlib
import glob
import os
import struct
from collections.abc import Iterable

from prometheus_client import mmap_dict, multiprocess, values
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import CollectorRegistry

_TWO_DOUBLES = struct.Struct("dd")  # a value and its timestamp, as prometheus-client stores them
INITIAL_BYTES = 64 * 1024  # prometheus-client's own first size; a process uses under 8 kB
# What reading a file a child is writing, or was killed while writing, can raise.
_UNREADABLE = (OSError, RuntimeError, ValueError, struct.error)


class AllocatedMmapedDict(mmap_dict.MmapedDict):
    """``MmapedDict`` whose file is allocated, not sparse, before it is mapped."""

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        super().__init__(filename if read_mode else _allocated(filename), read_mode)  # type: ignore[no-untyped-call]

    def write_value(self, key: str, value: float, timestamp: float) -> None:
        """Write ``value``, unless the file holds it already.

        A store to a mapped page dirties it even when the bytes are the
        same, and a dirty page is written back: a gauge set to its own value
        at every heartbeat cost disk writes for nothing.
        """
        pos = self._positions.get(key)
        if pos is not None and _TWO_DOUBLES.unpack_from(self._m, pos) == (value, timestamp):
            return
        super().write_value(key, value, timestamp)  # type: ignore[no-untyped-call]

    def _init_value(self, key: str) -> None:
        # Growth doubles the file by truncate too: allocate the doubled size
        # first; should that fail there is nothing better than to go on.
        if self._used + len(key.encode()) + 32 > self._capacity:
            with contextlib.suppress(OSError):
                os.posix_fallocate(self._f.fileno(), 0, self._capacity * 2)
        super()._init_value(key)  # type: ignore[no-untyped-call]


def _allocated(filename: str) -> str:
    """``filename`` with its blocks allocated, or a memory file when the disk has no room."""
    try:
        fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return _in_memory()
    try:
        os.posix_fallocate(fd, 0, max(os.fstat(fd).st_size, INITIAL_BYTES))
    except OSError:
        # An empty file would break the supervisor's collector: leave none.
        if os.fstat(fd).st_size == 0:
            with contextlib.suppress(OSError):
                os.unlink(filename)
        return _in_memory()
    finally:
        os.close(fd)
    return filename


def _in_memory() -> str:
    fd = os.memfd_create("felund-metrics")  # kept open for the life of the process
    return f"/proc/self/fd/{fd}"


def install() -> None:
    """Make prometheus-client map allocated files (before any metric is made)."""
    setattr(values, "MmapedDict", AllocatedMmapedDict)  # noqa: B010 - the module's global


class TolerantCollector(multiprocess.MultiProcessCollector):
    """The children's metrics, leaving out a file that cannot be read right now.

    A child killed while it grew its file, or a file removed between the
    listing and the read, made prometheus-client's collector raise, and the
    whole scrape answered 500 (seen while a test killed relay-sync). Such a
    file is left out of this scrape; the next one reads it again.
    """

    def __init__(self, registry: CollectorRegistry, path: str | None = None) -> None:
        super().__init__(registry, path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        files = glob.glob(os.path.join(self._path, "*.db"))
        try:
            merged: Iterable[Metric] = self.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        except _UNREADABLE:
            readable = [f for f in files if _readable(f)]
            merged = self.merge(readable, accumulate=True)  # type: ignore[no-untyped-call]
        return merged


def _readable(path: str) -> bool:
    try:
        for _ in mmap_dict.MmapedDict.read_all_values_from_file(path):  # type: ignore[no-untyped-call]
            pass
    except _UNREADABLE:
        return False
    return True
