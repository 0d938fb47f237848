"""The ui's benchmarks: a stored message to its line on an attached screen; redraw time.

Latency: the real `felund ui` runs on a pseudo-terminal (100x30) attached to
a real node; the bench posts a message through the store's RPC and reads the
terminal's output stream until the message's text is in it. Each message
starts with a marker of letters unlike the lines around it, so curses
(which sends only the cells that changed) sends the marker whole.

Redraw: a child process on its own pseudo-terminal builds the view model
from a node holding 100k messages in one channel (every stored row fed to
it, as catch-up would), then times ``ui_render.render`` alone, and render
plus a full repaint of the terminal (curses told to clear and draw every
cell), at the newest messages and scrolled up by 50 pages. Wall time on a
loaded machine waits for a core now and then: each row gives the CPU time
of the same redraws too, and the load average.

``python -m bench.ui`` runs these alone and prints their rows.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import statistics
import string
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import print_table
from felund.actor.runtime import load_context
from felund.bus.sockets import Bus, RPCClient
from felund.protocol import ENDPOINT_STORE_CTL, OP_POST, OP_SNAPSHOT, SVC_BENCH
from felund.testing import FELUND, Node, running_node
from felund.v1 import ids

Row = tuple[str, str, str]
COLS, ROWS = 100, 30
LATENCY_MESSAGES = 200
HISTORY = 100_000
REDRAWS = 200
PAGES_UP = 50
LETTERS = string.ascii_letters
WAIT_S = 10.0


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.99) - 1)]


@contextmanager
def _on_pty(argv: list[str], env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``argv`` with a pseudo-terminal of COLS x ROWS as its terminal; the master fd."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    env = {**env, "TERM": "xterm-256color", "TZ": "UTC", "LANG": "C.UTF-8"}
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    try:
        yield proc, master
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        os.close(master)


class _Terminal:
    """The output a program writes to its terminal, read as it comes."""

    def __init__(self, master: int) -> None:
        self._master = master
        self.seen = b""

    def wait_for(self, needle: bytes, timeout: float = WAIT_S) -> float:
        """perf_counter() when ``needle`` has come (searched in output since the last call)."""
        deadline = time.monotonic() + timeout
        while needle not in self.seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._master], [], [], remaining)[0]:
                raise AssertionError(f"{needle!r} never reached the terminal: {self.seen[-600:]!r}")
            try:
                self.seen += os.read(self._master, 65536)
            except OSError:  # the program closed its terminal
                raise AssertionError(f"the program exited before {needle!r}") from None
        at = time.perf_counter()
        self.seen = self.seen[self.seen.index(needle) + len(needle) :]
        return at

    def drain(self) -> None:
        """Read whatever is waiting (a child must never block on a full terminal)."""
        while select.select([self._master], [], [], 0)[0]:
            try:
                if not os.read(self._master, 65536):
                    return
            except OSError:
                return


def _marker(i: int) -> str:
    """12 letters, no two alike side by side (a terminal may send a run as one repeat
    command), each unlike the same place in the lines around it (curses sends only
    changed cells), and repeating only every 52 messages (more than the screen holds)."""
    return "".join(LETTERS[(i + 7 * k) % len(LETTERS)] for k in range(12))


def bench_latency(node: Node, rpc: RPCClient, node_id: str) -> Row:
    """A message stored on the node, to its line on an attached ui's terminal."""
    after_ack: list[float] = []
    after_post: list[float] = []
    with _on_pty([*FELUND, "ui"], node.env) as (proc, master):
        term = _Terminal(master)
        term.wait_for(b"general")
        # The pane sorts by created_ts first (then store_seq): one second apiece,
        # increasing, puts each line last, at the bottom of the pane.
        first_ts = int(time.time()) - LATENCY_MESSAGES - 10
        for i in range(LATENCY_MESSAGES + 5):  # the first few warm up
            run = _marker(i)
            ts = first_ts + i
            msg = {"msg_id": ids.new_msg_id(node_id, ts), "created_ts": ts, "text": f"{run} {i}"}
            t0 = time.perf_counter()
            rpc.call(OP_POST, {"circle_id": node.circle_id, "msgs": [msg]})
            acked = time.perf_counter()
            shown = term.wait_for(run.encode())
            if i >= 5:
                after_ack.append(shown - acked)
                after_post.append(shown - t0)
        assert proc.poll() is None, "the ui exited during the benchmark"
    p50, p99 = _percentiles(after_ack)
    post50, post99 = _percentiles(after_post)
    return (
        "ui: message stored on the node to its line on the screen",
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms",
        f"{LATENCY_MESSAGES} messages, real `felund ui` on a {COLS}x{ROWS} pty; from post to"
        f" screen (incl. the commit) p50 {post50 * 1000:.1f} ms, p99 {post99 * 1000:.1f} ms",
    )


def _fill(node: Node, rpc: RPCClient, node_id: str, count: int) -> None:
    for start in range(0, count, 1000):
        now = int(time.time())
        msgs = [
            {
                "msg_id": ids.new_msg_id(node_id, now),
                "created_ts": now,
                "text": f"history message {n}, a line of a typical length in a chat",
            }
            for n in range(start, min(count, start + 1000))
        ]
        rpc.call(OP_POST, {"circle_id": node.circle_id, "msgs": msgs}, 30_000, 1)


def bench_redraw(node: Node) -> list[Row]:
    """Render and full repaint times with HISTORY messages in the channel shown."""
    with tempfile.TemporaryDirectory(prefix="felund-bench-ui-") as tmp:
        out = Path(tmp) / "redraw.json"
        argv = [sys.executable, "-m", "bench.ui", "redraw", str(out)]
        with _on_pty(argv, node.env) as (proc, master):
            term = _Terminal(master)
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                select.select([master], [], [], 0.2)
                term.drain()
            assert proc.poll() == 0, f"the redraw child failed ({proc.returncode})"
        result: dict[str, Any] = json.loads(out.read_text())
    newest, up = result["newest"]["shown"], result[f"{PAGES_UP} pages up"]["shown"]
    assert newest != up, f"PageUp did not scroll:\n{newest}"
    rows: list[Row] = []
    for where in ("newest", f"{PAGES_UP} pages up"):
        got = result[where]
        render50, render99 = _percentiles(got["render"])
        full50, full99 = _percentiles(got["full"])
        cpu50, cpu99 = _percentiles(got["cpu"])
        rows.append(
            (
                f"ui: redraw with {HISTORY // 1000}k messages in the channel ({where})",
                f"p50 {full50 * 1000:.2f} ms, p99 {full99 * 1000:.2f} ms",
                f"render + full repaint of {COLS}x{ROWS}, {REDRAWS} times; render alone"
                f" p50 {render50 * 1000:.2f} ms, p99 {render99 * 1000:.2f} ms; CPU time of"
                f" render + repaint (what the wall time is without waiting for a core) p50"
                f" {cpu50 * 1000:.2f} ms, p99 {cpu99 * 1000:.2f} ms;"
                f" {got['messages']:,} messages in the model;"
                f" load average {os.getloadavg()[0]:.1f}",
            )
        )
    return rows


def _redraw_child(out: Path) -> None:
    """In the pty: build the model from the node, then time render and repaint."""
    import curses

    from felund.ui import model as ui_model
    from felund.ui import render as ui_render
    from felund.ui import terminal as ui_terminal

    ctx = load_context()
    bus = Bus(ctx.layout, SVC_BENCH, ctx.config.bus)
    rpc = bus.rpc_client(ENDPOINT_STORE_CTL)
    model = ui_model.Model(ctx.node_id)
    pending: list[Any] = [*model.on_resize(ROWS, COLS), *model.start()]
    for _ in range(1000):  # the model's own calls (circles, channels, inbox), answered for real
        if not pending:
            break
        effect = pending.pop(0)
        if isinstance(effect, ui_model.Call):
            try:
                pending += model.on_reply(effect.token, rpc.call(effect.op, effect.body))
            except Exception as exc:
                pending += model.on_error(effect.token, "error", str(exc))
    since = 0
    while True:  # every stored row, as catch-up would feed them
        page = rpc.call(OP_SNAPSHOT, {"since": since})
        if page["msgs"]:
            model.on_chat_msg_stored(page["msgs"])
            since = page["msgs"][-1]["store_seq"]
        if not page["more"]:
            break
    bus.close()

    def measure(win: Any) -> dict[str, Any]:
        screen = ui_terminal.Screen(win)
        results: dict[str, Any] = {}
        for where, pages in (("newest", 0), (f"{PAGES_UP} pages up", PAGES_UP)):
            for _ in range(pages):
                model.on_key("PGUP")
            render: list[float] = []
            full: list[float] = []
            cpu: list[float] = []
            for _ in range(REDRAWS):
                t0, c0 = time.perf_counter(), time.thread_time()
                lines = ui_render.render(model, ROWS, COLS)
                render.append(time.perf_counter() - t0)
                win.clearok(True)  # repaint every cell, as after a resize
                screen.draw(lines, ui_render.cursor(model, ROWS, COLS), force=True)
                full.append(time.perf_counter() - t0)
                cpu.append(time.thread_time() - c0)
            shown = "\n".join("".join(text for text, _ in line) for line in lines)
            results[where] = {
                "render": render,
                "full": full,
                "cpu": cpu,
                "messages": len(model.pane()),
            }
            results[where]["shown"] = shown
        return results

    out.write_text(json.dumps(curses.wrapper(measure)))


def bench_ui(root: Path) -> list[Row]:
    """Every ui benchmark, on one node."""
    with running_node(root / "ui-node", "bench") as node:
        ctx = load_context(node.env)
        bus = Bus(ctx.layout, SVC_BENCH, ctx.config.bus)
        try:
            rpc = bus.rpc_client(ENDPOINT_STORE_CTL)
            rows = [bench_latency(node, rpc, ctx.node_id)]
            _fill(node, rpc, ctx.node_id, HISTORY - LATENCY_MESSAGES - 5)
        finally:
            bus.close()
        rows += bench_redraw(node)
    return rows


def main() -> list[Row]:
    """The ui's rows of the benchmark table."""
    with tempfile.TemporaryDirectory(prefix="felund-bench-") as tmp:
        return bench_ui(Path(tmp))


if __name__ == "__main__":
    if sys.argv[1:2] == ["redraw"]:
        _redraw_child(Path(sys.argv[2]))
    else:
        print_table(main())
