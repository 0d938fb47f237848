"""What every child actor shares: config, logs, bus, heartbeats, stop signals.

A child heartbeats on ``sys.svc.heartbeat`` once per interval with its
statistics, publishes its log records on ``sys.log`` (``felund.logs``),
stops cleanly on SIGTERM/SIGINT, and exits by itself when its supervisor
is gone (its parent is no longer the supervisor that started it, named by
``SUPERVISOR_PID_ENV``), so no orphan holds a socket.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from felund import logs, metrics
from felund.actor import heap
from felund.actor.context import BENCH_UNSIGNED, Context, load_context
from felund.bus.sockets import Bus, Publisher
from felund.protocol import SUPERVISOR_PID_ENV

_PAGE = os.sysconf("SC_PAGE_SIZE")
# CPU seconds per heartbeat interval below which a process counts as idle: the
# heap is trimmed once, at the first idle beat after a busy one (never during work).
IDLE_CPU_S = 0.05
__all__ = ["BENCH_UNSIGNED", "Context", "Runtime", "load_context"]


class Runtime:
    """The shared machinery of one child actor."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.ctx = load_context()
        cfg = self.ctx.config
        self.log: structlog.stdlib.BoundLogger = logs.setup(
            service, self.ctx.node_id, cfg.log.level, cfg.log.format
        )
        self.bus = Bus(self.ctx.layout, service, cfg.bus)
        self.pub: Publisher = self.bus.publisher()
        logs.publish_to(self.pub.publish)
        self.stopping = False
        self._ppid = _supervisor_pid()
        self._orphaned = False
        self._interval = cfg.supervisor.heartbeat_interval_s
        self._next_beat = 0.0
        self._cpu_seen = 0.0
        self._worked = False  # busy since the heap was last trimmed
        # What the process frees of its own before the heap is trimmed (the store: its
        # database's page cache), called once when it goes idle after work.
        self.on_idle: list[Callable[[], None]] = []
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        metrics.SERVICE_START_TIME.labels(service).set(time.time())

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def running(self) -> bool:
        """False once asked to stop or orphaned (said once in the log)."""
        if not self._orphaned and os.getppid() != self._ppid:
            self._orphaned = True
            self.log.warning("svc.orphaned", supervisor_pid=self._ppid)
        return not self.stopping and not self._orphaned

    def tick(self, stats: Mapping[str, Any]) -> None:
        """Heartbeat and refresh process metrics when an interval has passed."""
        now = time.monotonic()
        if now < self._next_beat:
            return
        self._next_beat = now + self._interval
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        used = max(0.0, cpu - self._cpu_seen)
        metrics.PROCESS_CPU.labels(self.service).inc(used)
        self._cpu_seen = cpu
        if used >= IDLE_CPU_S * self._interval:
            self._worked = True
        elif self._worked:
            self._worked = False
            for release in self.on_idle:
                release()
            heap.release()
        self.bus.flush_metrics()
        rss = _rss_bytes()
        metrics.PROCESS_RSS.labels(self.service).set(rss)
        self.pub.heartbeat(
            {
                "service": self.service,
                "pid": os.getpid(),
                "inc": self.bus.stamper.inc,
                "rss": rss,
                "cpu": cpu,
                **stats,
            },
        )

    def close(self) -> None:
        """Release the bus (later log records go to stderr only)."""
        logs.publish_to(None)
        self.bus.close()


def _supervisor_pid() -> int:
    """The supervisor that started this process; without one (run by hand), the parent."""
    named = os.environ.get(SUPERVISOR_PID_ENV, "")
    return int(named) if named.isdigit() else os.getppid()


def _rss_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0
