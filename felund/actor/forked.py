"""Children forked from the supervisor, which imported their code once: their pages stay shared.

Each child used to be a fresh interpreter importing the same libraries
(zmq, structlog, prometheus-client, cryptography): ~25 MiB of its own each.
The supervisor imports every child's module once at start (``preload``),
before any thread or socket of its own, and freezes those objects out of the
garbage collector so that no collection writes to (and copies) their pages;
a child is then ``fork`` of it running its module's ``main``. A child still
starts from what the store holds, exits on its own, and is restarted alone:
only the way it is started changed.
"""

from __future__ import annotations

import gc
import importlib
import os
import signal
import sys
import traceback
from collections.abc import Callable, Mapping

from felund import logs

Main = Callable[[], None]


class Forked:
    """A forked child, polled like a ``subprocess.Popen``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """Its exit status (negative: the signal that ended it), None while it runs."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def preload(modules: Mapping[str, str]) -> dict[str, Main]:
    """Import each child's module; its ``main`` by child name. Call before any thread starts."""
    mains = {name: importlib.import_module(module).main for name, module in modules.items()}
    gc.collect()
    gc.freeze()  # what exists now is never scanned again: its pages stay shared
    return mains


def start(main: Main, env: Mapping[str, str]) -> Forked:
    """Fork a child running ``main`` with ``env`` and stdin from /dev/null."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return Forked(pid)
    os._exit(_child(main, env))  # never returns into the supervisor's code


def _child(main: Main, env: Mapping[str, str]) -> int:
    # The supervisor's descriptors stay open, unused: objects of its (prometheus-
    # client's files, sockets) close theirs by number, which a closed and reused
    # number would turn into closing one of the child's (libzmq aborts). One of
    # them is the node lock: no new supervisor starts while a child of an old
    # one still runs (it exits within a heartbeat of its parent's end).
    try:
        logs.publish_to(None)  # the supervisor's bus is not this process's
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.environ.clear()
        os.environ.update(env)
        main()
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException:  # what an uncaught exception does to an interpreter
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
