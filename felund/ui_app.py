"""``felund ui``: the curses program that attaches to a running node.

A bus client like any other process, and not supervised: it finds the node
through its lock (as ``felund.client.open_node`` does), follows the store's
messages with the Clone pattern (``felund.catchup.CatchUp``, from the store's
``last_seq`` at attach; history comes from the view model's ``store.inbox``
calls), listens to ``chat.circle.changed``, heartbeats and ``sys.log``, and
runs the store requests the view model asks for on a worker thread, so the
screen never freezes while the store restarts. Detaching (Ctrl+Q) closes the
bus and ends curses; the node goes on, and several uis may be attached.

Owns nothing durable; logs (and any traceback) go to ``ui.log`` in the home,
never to the terminal. The view model (``felund.ui_model``) and the renderer
(``felund.ui_render``) are sans-IO; this module is the I/O around them.
"""

from __future__ import annotations

import contextlib
import curses
import dataclasses
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import structlog
import zmq

from felund import logs, ui_model, ui_render
from felund.bus import Bus, RPCClient, Subscriber
from felund.catchup import CatchUp, Row
from felund.config import BusConfig
from felund.errors import ConfigError, FelundError, RPCError, RPCTimeout
from felund.home import NodeLock
from felund.protocol import (
    ENDPOINT_STORE_CTL,
    OP_CIRCLE_CREATE,
    OP_STATS,
    SVC_GOSSIP,
    SVC_UI,
    TOPIC_CIRCLE_CHANGED,
    TOPIC_HEARTBEAT,
    TOPIC_LOG,
)
from felund.service import Context, load_context
from felund.ui_model import Call, Quit
from felund.ui_render import Line

EXIT_OK = 0
EXIT_UNAVAILABLE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

NOT_RUNNING = (
    "the node is not running — start it with `felund run` (or `systemctl --user start felund`),"
    " then `felund ui` again (or `felund ui --start`)"
)
NO_TERMINAL = "`felund ui` needs a terminal (over ssh: `ssh -t HOST felund ui`)"
NO_ANSWER = "the node is running but its store does not answer; see `felund status`"
LOG_FILE = "ui.log"
NODE_LOG_FILE = "node.log"  # where `felund ui --start` sends the node's output

ATTACH_TIMEOUT_S = 4.0  # the store must answer this soon at attach
START_TIMEOUT_S = 30.0  # `--start`: the node must serve within this
CALL_DEADLINE_S = 60.0  # an idempotent call is retried this long, then "timeout"
CALL_TRY_MS = 1000  # one try of a call; short, so a restarted store is found quickly
ONCE_TIMEOUT_MS = 5000  # a call that must not be repeated gets one long try
# Retrying these could do twice what the user asked once (two new circles).
NOT_IDEMPOTENT = frozenset({OP_CIRCLE_CREATE})
TICK_MS = 1000  # wake at least this often: clock on screen, catch-up retries
SNAPSHOT_TIMEOUT_MS = 1000  # catch-up runs on the main loop: never block it long
ESC_DELAY_MS = 25


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
    log = logs.setup(SVC_UI, ctx.node_id, ctx.config.log.level, "json", _log_stream(log_path))
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


def _log_stream(path: Path) -> TextIO:
    """The ui's log file (private, appended to, line-buffered): the terminal is the screen."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(fd, "a", buffering=1)


def _main_bus_config(ctx: Context) -> BusConfig:
    # The main loop's only RPC is catch-up's snapshot: bounded, so a store that
    # dies in the middle costs the screen at most a second or two.
    return dataclasses.replace(ctx.config.bus, rpc_timeout_ms=SNAPSHOT_TIMEOUT_MS, rpc_retries=1)


def find_node(ctx: Context, start: bool) -> Context:
    """The context of the running node (its runtime directory named by its lock).

    Raises FelundError (one line) if it is not running and ``start`` is false.
    """
    lock = NodeLock(ctx.layout)
    if lock.try_acquire():
        lock.release()
        if not start:
            raise FelundError(NOT_RUNNING)
        start_node(ctx)
    _, runtime = lock.holder()
    if runtime is not None and runtime != ctx.layout.runtime_dir:
        ctx = dataclasses.replace(ctx, layout=dataclasses.replace(ctx.layout, runtime_dir=runtime))
    return ctx


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
    rpc = bus.rpc_client(ENDPOINT_STORE_CTL)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                stats = rpc.call(OP_STATS, {}, 1000, 0)
                return int(stats["last_seq"])
            except RPCTimeout:
                if time.monotonic() > deadline:
                    raise FelundError(NO_ANSWER) from None
                rpc.close()
                rpc = bus.rpc_client(ENDPOINT_STORE_CTL)
    finally:
        rpc.close()


# --- store calls, off the main thread ---------------------------------------------
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
    client. Idempotent calls (a post carries its msg_id) are retried with a
    fresh socket until answered or ``CALL_DEADLINE_S`` passes; each result is
    queued and the main loop woken through ``wake_fd``.
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
                result, rpc = self._answer(bus, rpc, call)
                self.results.put(result)
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_fd, b"c")  # a full pipe is already a wake-up
        except Exception:  # the screen goes on; what is lost shows as pending, the log says why
            logs.get().exception("ui.calls_failed")
        finally:
            bus.close()

    def _answer(self, bus: Bus, rpc: RPCClient, call: Call) -> tuple[Reply | Failure, RPCClient]:
        once = call.op in NOT_IDEMPOTENT
        deadline = time.monotonic() + CALL_DEADLINE_S
        while True:
            try:
                answer = rpc.call(call.op, call.body, ONCE_TIMEOUT_MS if once else CALL_TRY_MS, 0)
                return Reply(call.token, answer), rpc
            except RPCError as exc:
                return Failure(call.token, exc.code, exc.message), rpc
            except RPCTimeout:
                # A fresh socket: what the dead store left queued is dropped.
                rpc.close()
                rpc = bus.rpc_client(ENDPOINT_STORE_CTL)
                if once or self._stopping.is_set() or time.monotonic() > deadline:
                    return Failure(call.token, "timeout", "the node did not answer"), rpc


# --- the terminal -------------------------------------------------------------------
CONTROL_KEYS = {
    "\x11": "C-q",
    "\x03": "C-q",  # raw mode: Ctrl+C is a key, and detaching is what it should do
    "\x0e": "C-n",
    "\x10": "C-p",
    "\x15": "C-u",
    "\x17": "C-w",
    "\t": "TAB",
    "\n": "ENTER",
    "\r": "ENTER",
    "\x7f": "BACKSPACE",
    "\x08": "BACKSPACE",
    "\x1b": "ESC",
}
CURSES_KEYS = {
    curses.KEY_F1: "F1",
    curses.KEY_F2: "F2",
    curses.KEY_F3: "F3",
    curses.KEY_UP: "UP",
    curses.KEY_DOWN: "DOWN",
    curses.KEY_LEFT: "LEFT",
    curses.KEY_RIGHT: "RIGHT",
    curses.KEY_PPAGE: "PGUP",
    curses.KEY_NPAGE: "PGDN",
    curses.KEY_HOME: "HOME",
    curses.KEY_END: "END",
    curses.KEY_BACKSPACE: "BACKSPACE",
    curses.KEY_DC: "DELETE",
    curses.KEY_ENTER: "ENTER",
}


class KeyReader:
    """Turns what ``get_wch`` returns into the contract's keys.

    Runs of typed characters become one key (a paste is one edit); ESC then a
    digit is Alt+digit (``M-1``), as terminals send it.
    """

    def __init__(self) -> None:
        self._text: list[str] = []
        self._esc = False
        self.keys: list[str] = []
        self.resized = False

    def feed(self, ch: str | int) -> None:
        """One character or key code."""
        if self._esc:
            self._esc = False
            if isinstance(ch, str) and len(ch) == 1 and ch in "123456789":
                self._push(f"M-{ch}")
                return
            self._push("ESC")
        if isinstance(ch, int):
            if ch == curses.KEY_RESIZE:
                self.resized = True
            elif ch in CURSES_KEYS:
                self._push(CURSES_KEYS[ch])
        elif ch == "\x1b":
            self._flush_text()
            self._esc = True
        elif ch in CONTROL_KEYS:
            self._push(CONTROL_KEYS[ch])
        elif ch.isprintable():
            self._text.append(ch)

    def take(self) -> list[str]:
        """The keys read since the last call (a lone ESC is ESC)."""
        if self._esc:
            self._esc = False
            self._push("ESC")
        self._flush_text()
        keys, self.keys = self.keys, []
        return keys

    def _push(self, key: str) -> None:
        self._flush_text()
        self.keys.append(key)

    def _flush_text(self) -> None:
        if self._text:
            self.keys.append("".join(self._text))
            self._text = []


_NAME_COLORS = (
    curses.COLOR_RED,
    curses.COLOR_GREEN,
    curses.COLOR_YELLOW,
    curses.COLOR_BLUE,
    curses.COLOR_MAGENTA,
    curses.COLOR_CYAN,
)


def styles() -> dict[str, int]:
    """Curses attributes of the renderer's styles; colour pairs when the terminal has them."""
    attrs = {
        "header": curses.A_REVERSE | curses.A_BOLD,
        "sidebar": curses.A_NORMAL,
        "sidebar.active": curses.A_REVERSE,
        "sidebar.unread": curses.A_BOLD,
        "time": curses.A_DIM,
        "text": curses.A_NORMAL,
        "pending": curses.A_DIM,
        "failed": curses.A_BOLD | curses.A_UNDERLINE,
        "notice": curses.A_DIM,
        "input": curses.A_NORMAL,
        "overlay": curses.A_REVERSE,
        "error": curses.A_BOLD,
        **{f"name.{i}": curses.A_BOLD for i in range(8)},
    }
    if not curses.has_colors():
        return attrs
    background = -1
    try:
        curses.use_default_colors()
    except curses.error:
        background = curses.COLOR_BLACK
    many = curses.COLORS >= 16
    names = [
        *_NAME_COLORS,
        10 if many else curses.COLOR_WHITE,  # bright green, else plain white
        13 if many else curses.COLOR_WHITE,  # bright magenta
    ]
    pairs: dict[str, tuple[int, int]] = {f"name.{i}": (c, background) for i, c in enumerate(names)}
    pairs |= {
        "header": (curses.COLOR_WHITE, curses.COLOR_BLUE),
        "failed": (curses.COLOR_RED, background),
        "error": (curses.COLOR_RED, background),
        "notice": (curses.COLOR_CYAN, background),
    }
    for number, (style, (fg, bg)) in enumerate(pairs.items(), start=1):
        if number >= curses.COLOR_PAIRS:
            break
        curses.init_pair(number, fg, bg)
        # A coloured header needs no reverse video (which would swap its colours).
        attrs[style] = (attrs[style] & ~curses.A_REVERSE) | curses.color_pair(number)
    return attrs


class Screen:
    """Draws the renderer's lines; curses sends the terminal only what changed."""

    def __init__(self, win: curses.window) -> None:
        self.win = win
        self.attrs = styles()
        self._last: tuple[list[Line], tuple[int, int]] | None = None

    def size(self) -> tuple[int, int]:
        """(rows, cols) of the terminal."""
        rows, cols = self.win.getmaxyx()
        return rows, cols

    def draw(self, lines: list[Line], cursor: tuple[int, int], force: bool = False) -> bool:
        """Show ``lines`` with the cursor at (y, x); False if nothing changed."""
        if not force and self._last == (lines, cursor):
            return False
        self._last = (lines, cursor)
        rows, cols = self.size()
        plain = curses.A_NORMAL
        for y, line in enumerate(lines[:rows]):
            self.win.move(y, 0)
            for text, style in line:
                try:
                    self.win.addstr(text, self.attrs.get(style, plain))
                except curses.error:
                    break  # the bottom-right cell: written, but the cursor cannot move on
        y, x = cursor
        with contextlib.suppress(curses.error):
            self.win.move(min(max(y, 0), rows - 1), min(max(x, 0), cols - 1))
        self.win.refresh()
        return True

    def invalidate(self) -> None:
        """Repaint everything at the next draw (after a resize)."""
        self._last = None
        self.win.clear()


# --- the app ----------------------------------------------------------------------
class App:
    """The main loop: keys, bus events and call results in; screen out."""

    def __init__(self, ctx: Context, bus: Bus, win: curses.window, since: int) -> None:
        self.log: structlog.stdlib.BoundLogger = logs.get()
        self.win = win
        self.screen = Screen(win)
        self.model = ui_model.Model(node_id=ctx.node_id, clock=time.time)
        self.catchup = CatchUp(bus, since)
        self.events: Subscriber = bus.subscriber(TOPIC_CIRCLE_CHANGED, TOPIC_HEARTBEAT, TOPIC_LOG)
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self.worker = Worker(ctx, self._wake_w)
        self.keys = KeyReader()
        self.quitting = False
        self._peers: int | None = None

    def run(self) -> None:
        """Until the user detaches."""
        self._setup_terminal()
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

    def _setup_terminal(self) -> None:
        curses.raw()  # Ctrl+Q, Ctrl+C and friends are keys, not flow control or signals
        curses.noecho()
        curses.set_escdelay(ESC_DELAY_MS)
        self.win.keypad(True)
        self.win.nodelay(True)
        with contextlib.suppress(curses.error):
            curses.curs_set(1)

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

    def _effects(self, effects: Iterable[Call | Quit] | None) -> None:
        for effect in effects or ():
            if isinstance(effect, Quit):
                self.quitting = True
            else:
                self.worker.submit(effect)

    def _read_keys(self) -> None:
        while True:
            try:
                ch = self.win.get_wch()
            except curses.error:
                break  # nothing left to read
            self.keys.feed(ch)
        for key in self.keys.take():
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
            self.catchup.poll(0, self._on_stored)
        except (RPCTimeout, RPCError) as exc:
            # The store went away during a snapshot; catch-up resumes from the
            # last seq applied at the next wake-up.
            self.log.warning("ui.catchup_failed", error=type(exc).__name__)

    def _on_stored(self, rows: list[Row]) -> None:
        self._effects(self.model.on_stored(rows))

    def _read_events(self) -> None:
        handlers: dict[str, Callable[[Any], None]] = {
            TOPIC_CIRCLE_CHANGED: lambda body: self._effects(self.model.on_circles_changed()),
            TOPIC_HEARTBEAT: self._on_heartbeat,
            TOPIC_LOG: lambda body: self._effects(self.model.on_log(body)),
        }
        while (got := self.events.recv_nowait()) is not None:
            body = got.frame.body
            handler = handlers.get(got.frame.topic)
            if handler is not None and isinstance(body, dict):
                handler(body)

    def _on_heartbeat(self, body: dict[str, Any]) -> None:
        if body.get("service") != SVC_GOSSIP:
            return
        peers = body.get("peers", body.get("sessions"))
        if type(peers) is int and peers != self._peers:
            self._peers = peers
            self._effects(self.model.on_peers(peers))

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
