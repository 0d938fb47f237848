"""What the kernel says of a node's processes (bytes written, memory, CPU: ``/proc/PID/*``)
and of the machine (``/proc/stat``)."""

from __future__ import annotations

from pathlib import Path


def write_bytes(pid: int) -> int:
    """Bytes this process caused to be written to a block device (``/proc/PID/io``).

    Counted when a page becomes dirty, so writes through a mapping count too;
    pages of a tmpfs have no device behind them and count nothing.
    """
    return _field(f"/proc/{pid}/io", "write_bytes:")


def rss_kib(pid: int) -> int:
    """Resident memory of the process, shared pages counted whole."""
    return _field(f"/proc/{pid}/status", "VmRSS:")


def pss_kib(pid: int) -> int:
    """Proportional memory of the process: each shared page divided among its sharers."""
    return _field(f"/proc/{pid}/smaps_rollup", "Pss:")


def cpu_ticks(pid: int) -> int:
    """User and system CPU time of the process, in clock ticks (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def exited(pid: int) -> bool:
    """Gone, or a zombie: a process its parent has not reaped (or that init took over)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all the machine's cores since boot (``/proc/stat``):
    what no list of processes shows, the kernel's own work (loopback TCP) included."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # less idle and iowait


def _field(path: str, name: str) -> int:
    for line in Path(path).read_text().splitlines():
        if line.startswith(name):
            return int(line.split()[1])
    raise LookupError(f"no {name} in {path}")
