"""The ui's store calls, run off the main loop on a thread with its own bus.

The view model's ``Call`` effects go in (``Worker.submit``); a ``Reply`` or
a ``Failure`` comes out on ``Worker.results`` for each, in order, and a byte
on ``wake_fd`` wakes the main loop, so the screen never waits on a store
that is restarting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
import time
from typing import Any, Final

from felund import logs
from felund.actor.runtime import Context
from felund.bus.sockets import Bus, RPCClient
from felund.errors import RPCError, RPCTimeout
from felund.protocol import ENDPOINT_STORE_CTL, OP_CIRCLE_CREATE, OP_POST, SVC_UI
from felund.ui.view import Call

CALL_DEADLINE_S: Final = 60.0  # an idempotent call is retried this long, then "timeout"
CALL_TRY_MS: Final = 1000  # one try of a call; short, so a restarted store is found quickly
ONCE_TIMEOUT_MS: Final = 5000  # a call that must not be repeated gets one long try
# Retrying these could do twice what the user asked once (two new circles).
NOT_IDEMPOTENT: Final = frozenset({OP_CIRCLE_CREATE})
# A message typed is retried until the node answers, however long it is away (it carries
# its msg_id: stored once): the screen shows it pending meanwhile, never lost.
UNTIL_ANSWERED: Final = frozenset({OP_POST})


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a call."""

    token: int
    answer: Any


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """A call that failed: the store's error code, or "timeout"."""

    token: int
    code: str
    text: str


class Worker:
    """Runs the view model's store calls in order on a thread with its own bus.

    ZeroMQ sockets are not thread-safe, so the thread owns its context and
    client. Idempotent calls are retried (the client takes a fresh socket
    after a timeout) until answered or ``CALL_DEADLINE_S`` passes, posts
    until answered; each result is queued and the main loop woken through
    ``wake_fd``.
    """

    def __init__(self, ctx: Context, wake_fd: int) -> None:
        self._ctx = ctx
        self._wake_fd = wake_fd
        self._calls: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
        self.results: queue.SimpleQueue[Reply | Failure] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ui-calls", daemon=True)
        self._thread.start()

    def submit(self, call: Call) -> None:
        """Queue a call."""
        self._calls.put(call)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Abandon queued calls and wait (bounded) for the thread to close its bus."""
        self._stopping.set()
        self._calls.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        bus = Bus(self._ctx.layout, SVC_UI, self._ctx.config.bus)
        try:
            rpc = bus.rpc_client(ENDPOINT_STORE_CTL)
            while (call := self._calls.get()) is not None and not self._stopping.is_set():
                self.results.put(self._answer(rpc, call))
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_fd, b"c")  # a full pipe is already a wake-up
        except Exception:  # the screen goes on; what is lost shows as pending, the log says why
            logs.get().exception("ui.calls_failed")
        finally:
            bus.close()

    def _answer(self, rpc: RPCClient, call: Call) -> Reply | Failure:
        once = call.op in NOT_IDEMPOTENT
        deadline = None if call.op in UNTIL_ANSWERED else time.monotonic() + CALL_DEADLINE_S
        while True:
            try:
                answer = rpc.call(call.op, call.body, ONCE_TIMEOUT_MS if once else CALL_TRY_MS, 0)
                return Reply(call.token, answer)
            except RPCError as exc:
                return Failure(call.token, exc.code, exc.message)
            except RPCTimeout:
                late = deadline is not None and time.monotonic() > deadline
                if once or late or self._stopping.is_set():
                    return Failure(call.token, "timeout", "the node did not answer")
