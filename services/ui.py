"""The ui process: the curses screen attached to a running node (``felund ui``).

- Not supervised: started by a person (``felund ui`` execs ``python -m
  services.ui``), it finds the node through its lock
  (``felund.store.client.find_running``); ``--start`` starts a stopped node first
  (``felund run`` in a session of its own, output to ``node.log``).
- Subscribes: ``chat.msg.stored`` through the Clone pattern
  (``felund.bus.catchup.CatchUp``, from the store's ``last_seq`` at attach;
  history comes from the view model's ``store.inbox`` calls),
  ``chat.circle.changed``, ``sys.svc.heartbeat`` and ``sys.log``; each event
  goes to the view model's handler of that topic. The store's heartbeats
  say the node answers: silent for three of them, the screen says it is
  disconnected (and since when), then that it is back.
- Calls: the store requests the view model asks for, on a worker thread
  (``felund.ui.calls``), so the screen never freezes while the store
  restarts.
- Publishes and serves nothing. Several uis may be attached at once.
- Owns nothing durable: detaching (Ctrl+Q) closes the bus and ends curses;
  the node goes on, and the next attach rebuilds the view from the store.
- Logs (and any traceback) go to ``ui.log`` in the home, cut at attach once
  it passes ``LOG_MAX_BYTES``; never to the terminal. Whatever stops the ui
  ends in one line on stderr and a non-zero status.

The view model (``felund.ui.model``), the renderer (``felund.ui.render``) and
the terminal (``felund.ui.terminal``) do the work; this module is the loop
that connects them to the bus.
"""

from __future__ import annotations

import argparse
import contextlib
import curses
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any, Final, TextIO

import structlog
import zmq

from felund import logs
from felund.actor.runtime import Context, load_context
from felund.bus.catchup import CatchUp, Row
from felund.bus.sockets import Bus, Subscriber
from felund.config import BusConfig
from felund.errors import ConfigError, FelundError, RPCError, RPCTimeout
from felund.home import NodeLock
from felund.protocol import (
    ENDPOINT_STORE_CTL,
    OP_STATS,
    SVC_UI,
    TOPIC_CIRCLE_CHANGED,
    TOPIC_HEARTBEAT,
    TOPIC_LOG,
    TOPIC_SETTINGS_CHANGED,
)
from felund.store.client import find_running
from felund.ui import render as ui_render
from felund.ui import terminal as ui_terminal
from felund.ui.calls import Reply, Worker
from felund.ui.model import Copy, Effect, Model, Quit
from felund.ui.terminal import KeyReader, Screen

EXIT_OK: Final = 0
EXIT_UNAVAILABLE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

NOT_RUNNING: Final = (
    "the node is not running — start it with `felund run` (or `systemctl --user start felund`),"
    " then `felund ui` again (or `felund ui --start`)"
)
NO_TERMINAL: Final = "`felund ui` needs a terminal (over ssh: `ssh -t HOST felund ui`)"
NO_ANSWER: Final = "the node is running but its store does not answer; see `felund status`"
LOG_FILE: Final = "ui.log"
LOG_MAX_BYTES: Final = 1 << 20  # beyond this at attach, the log moves to ui.log.1
NODE_LOG_FILE: Final = "node.log"  # where `felund ui --start` sends the node's output

ATTACH_TIMEOUT_S: Final = 4.0  # the store must answer this soon at attach
START_TIMEOUT_S: Final = 30.0  # `--start`: the node must serve within this
TICK_MS: Final = 1000  # wake at least this often: clock on screen, catch-up retries
SNAPSHOT_TIMEOUT_MS: Final = 1000  # catch-up runs on the main loop: never block it long


# --- startup ------------------------------------------------------------------
def main(start: bool = False) -> int:
    """Attach a ui to the node at ``$FELUND_HOME``; the process's exit status.

    Whatever goes wrong ends in one line on stderr (a traceback goes to the log).
    """
    try:
        ctx = load_context()
    except ConfigError as exc:
        return _say(EXIT_USAGE, str(exc))
    log_path = ctx.layout.home / LOG_FILE
    log = logs.setup(SVC_UI, ctx.node_id, ctx.config.log.level, "json", open_log(log_path))
    try:
        return attach(ctx, start)
    except FelundError as exc:
        return _say(EXIT_UNAVAILABLE, str(exc))
    except KeyboardInterrupt:
        return _say(EXIT_INTERRUPTED, "interrupted")
    except Exception:  # the last line of defence: never a traceback on the terminal
        log.exception("ui.crashed")
        return _say(EXIT_UNAVAILABLE, f"the ui stopped on an unexpected error; see {log_path}")


def attach(ctx: Context, start: bool) -> int:
    """Find (or start) the node, wait for its store, run the screen until detached."""
    ctx = find_node(ctx, start)
    bus = Bus(ctx.layout, SVC_UI, _main_bus_config(ctx))
    try:
        since = wait_for_store(bus, START_TIMEOUT_S if start else ATTACH_TIMEOUT_S)
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            return _say(EXIT_USAGE, NO_TERMINAL)
        logs.get().info("ui.attach", since=since)
        # The terminal's own size: ncurses believes LINES/COLUMNS over the terminal, and a
        # stale pair (exported by a shell or a script; pytest-xdist's workers set 24 x 80)
        # held the screen at that size whatever the terminal, through every resize.
        # (use_env(False) is no help: it takes terminfo's 80 x 24 instead.)
        for name in ("LINES", "COLUMNS"):
            os.environ.pop(name, None)
        # SIGINT from outside (raw mode makes Ctrl+C a key): detach, as Ctrl+Q does.
        with contextlib.suppress(KeyboardInterrupt):
            curses.wrapper(lambda win: App(ctx, bus, win, since).run())
    finally:
        bus.close()
    logs.get().info("ui.detach")
    return EXIT_OK


def _say(code: int, text: str) -> int:
    sys.stderr.write(f"felund: {text}\n")
    return code


def open_log(path: Path, max_bytes: int = LOG_MAX_BYTES) -> TextIO:
    """The ui's log file (private, appended to, line-buffered): the terminal is the screen.

    Past ``max_bytes`` it becomes ``<name>.1`` (replacing the one before) and
    a new file starts: the log keeps the last session or so, bounded.
    """
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > max_bytes:
            path.replace(path.with_name(path.name + ".1"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(fd, "a", buffering=1)


def _main_bus_config(ctx: Context) -> BusConfig:
    # The main loop's only RPC is catch-up's snapshot: bounded, so a store that
    # dies in the middle costs the screen at most a second or two.
    return ctx.config.bus._replace(rpc_timeout_ms=SNAPSHOT_TIMEOUT_MS, rpc_retries=1)


def find_node(ctx: Context, start: bool) -> Context:
    """The context of the running node (``felund.store.client.find_running``).

    Raises FelundError (one line) if it is not running and ``start`` is false.
    """
    lock = NodeLock(ctx.layout)
    running = find_running(ctx, lock)
    if running is None:
        lock.release()
        if not start:
            raise FelundError(NOT_RUNNING)
        start_node(ctx)
        running = find_running(ctx, lock)
        if running is None:  # it started, then stopped at once
            lock.release()
            raise FelundError(f"the node stopped right after it started; see {NODE_LOG_FILE}")
    return running


def start_node(ctx: Context) -> None:
    """`felund run` in the background, in a session of its own (it outlives the ui)."""
    log_path = ctx.layout.home / NODE_LOG_FILE
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "felund", "run"],
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        os.close(fd)
    lock = NodeLock(ctx.layout)
    deadline = time.monotonic() + START_TIMEOUT_S
    # Its pid in the lock file means it holds the lock (the supervisor execs in
    # place); taking the lock ourselves to test it could make its start fail.
    while lock.holder()[0] != proc.pid:
        if proc.poll() is not None:
            raise FelundError(
                f"the node did not start (exit status {proc.returncode}); see {log_path}"
            )
        if time.monotonic() > deadline:
            raise FelundError(
                f"the node did not start within {START_TIMEOUT_S:g} s; see {log_path}"
            )
        time.sleep(0.1)


def wait_for_store(bus: Bus, timeout_s: float) -> int:
    """The store's last_seq, once it answers; FelundError after ``timeout_s``."""
    rpc = bus.rpc_client(ENDPOINT_STORE_CTL)  # each try after a timeout on a fresh socket
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                return int(rpc.call(OP_STATS, {}, 1000, 0)["last_seq"])
            except RPCTimeout:
                if time.monotonic() > deadline:
                    raise FelundError(NO_ANSWER) from None
    finally:
        rpc.close()


# --- the main loop -------------------------------------------------------------------
class App:
    """Keys, bus events and call results in; screen out; until the user detaches."""

    def __init__(self, ctx: Context, bus: Bus, win: curses.window, since: int) -> None:
        self.log: structlog.stdlib.BoundLogger = logs.get()
        self.win = win
        self.screen = Screen(win)
        beats = ctx.config.supervisor
        self.model = Model(
            node_id=ctx.node_id,
            clock=time.time,
            node_quiet_s=beats.heartbeat_interval_s * beats.heartbeat_misses,
        )
        self.catchup = CatchUp(bus, since)
        self.events: Subscriber = bus.subscriber(
            TOPIC_CIRCLE_CHANGED, TOPIC_HEARTBEAT, TOPIC_LOG, TOPIC_SETTINGS_CHANGED
        )
        # Each topic to the view model's handler named after it.
        self.handlers: dict[str, Callable[[Any], list[Effect]]] = {
            TOPIC_CIRCLE_CHANGED: self.model.on_chat_circle_changed,
            TOPIC_HEARTBEAT: self.model.on_sys_svc_heartbeat,
            TOPIC_LOG: self.model.on_sys_log,
            TOPIC_SETTINGS_CHANGED: self.model.on_sys_settings_changed,
        }
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self.worker = Worker(ctx, self._wake_w)
        self.keys = KeyReader()
        self.quitting = False

    def run(self) -> None:
        """Until the user detaches."""
        ui_terminal.setup(self.win)
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        old_winch = signal.signal(signal.SIGWINCH, self._on_winch)
        try:
            self._loop()
        finally:
            signal.signal(signal.SIGWINCH, old_winch)
            signal.set_wakeup_fd(old_wakeup)
            self.worker.stop()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _on_winch(self, signum: int, frame: FrameType | None) -> None:
        # Python's handler replaces ncurses's: the loop resizes curses itself.
        self.keys.resized = True

    def _loop(self) -> None:
        poller = zmq.Poller()
        stdin = sys.stdin.fileno()
        for sock in (stdin, self.catchup.sub.sock, self.events.sock, self._wake_r):
            poller.register(sock, zmq.POLLIN)
        rows, cols = self.screen.size()
        self._effects(self.model.on_resize(rows, cols))
        self._effects(self.model.start())
        ready: dict[Any, int] = {}
        while not self.quitting:
            if self.model.dirty or not ready:  # on a quiet tick too: the clock moves on
                self.redraw()
            ready = dict(poller.poll(TICK_MS))
            self._effects(self.model.on_tick())
            if stdin in ready:
                self._read_keys()
            if self.keys.resized:
                self._resize()
            self._catch_up()
            if self.events.sock in ready:
                self._read_events()
            if self._wake_r in ready:
                self._read_results()

    def redraw(self, force: bool = False) -> bool:
        """Render the model and draw it; False if the screen was already showing it."""
        rows, cols = self.screen.size()
        lines = ui_render.render(self.model, rows, cols)
        self.model.dirty = False
        return self.screen.draw(lines, ui_render.cursor(self.model, rows, cols), force)

    def _effects(self, effects: Iterable[Effect] | None) -> None:
        for effect in effects or ():
            if isinstance(effect, Quit):
                self.quitting = True
            elif isinstance(effect, Copy):
                # Around curses: the terminal keeps it (or ignores an OSC it does not know).
                os.write(sys.stdout.fileno(), ui_terminal.osc52(effect.text))
            else:
                self.worker.submit(effect)

    def _read_keys(self) -> None:
        while True:
            try:
                ch = self.win.get_wch()
            except curses.error:
                break  # nothing left to read
            if ch == curses.KEY_MOUSE:
                with contextlib.suppress(curses.error):  # a report curses could not read
                    self.keys.mouse(curses.getmouse())
                continue
            self.keys.feed(ch)
        for key in self.keys.take():
            if isinstance(key, tuple):
                self._effects(self.model.on_click(*key))
            else:
                self._effects(self.model.on_key(key))
            if self.quitting:
                return

    def _resize(self) -> None:
        self.keys.resized = False
        try:
            cols, rows = os.get_terminal_size(sys.stdout.fileno())
        except OSError:
            rows, cols = self.screen.size()
        curses.resizeterm(rows, cols)
        self.screen.invalidate()
        self._effects(self.model.on_resize(rows, cols))

    def _catch_up(self) -> None:
        try:
            self.catchup.poll(0, self._on_chat_msg_stored)
        except (RPCTimeout, RPCError) as exc:
            # The store went away during a snapshot; catch-up resumes from the
            # last seq applied at the next wake-up.
            self.log.warning("ui.catchup_failed", error=type(exc).__name__)

    def _on_chat_msg_stored(self, rows: list[Row]) -> None:
        self._effects(self.model.on_chat_msg_stored(rows))

    def _read_events(self) -> None:
        while (got := self.events.recv_nowait()) is not None:
            handler = self.handlers.get(got.frame.topic)
            if handler is not None:
                self._effects(handler(got.frame.body))

    def _read_results(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        while True:
            try:
                result = self.worker.results.get_nowait()
            except queue.Empty:
                return
            if isinstance(result, Reply):
                self._effects(self.model.on_reply(result.token, result.answer))
            else:
                self._effects(self.model.on_error(result.token, result.code, result.text))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="felund ui", description="Attach to the running node.")
    parser.add_argument("--start", action="store_true", help="start the node if it is stopped")
    raise SystemExit(main(start=parser.parse_args().start))
