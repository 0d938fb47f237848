"""Real felund nodes for tests and benchmarks: a FELUND_HOME each, the real CLI, real processes."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from felund.relay.client import signed_headers
from felund.v1 import crypto, ids
from felund.v1.wire import compose_message, to_wire

if TYPE_CHECKING:
    from playwright.sync_api import Browser

FELUND = [sys.executable, "-m", "felund"]
REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "tests" / "vectors" / "felund-v1.json"  # copied from shared/, see its README


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def vector_cases() -> dict[str, list[Any]]:
    """The cases of the v1 interop vectors (the repository's copy, tests/vectors), by group."""
    text = VECTORS.read_text(encoding="utf-8")
    cases: dict[str, list[Any]] = json.loads(text)["cases"]
    return cases


def wire_message(
    secret: str,
    author: str,
    text: str,
    *,
    name: str = "tester",
    channel: str = "general",
    ts: int | None = None,
    encrypt: bool = True,
) -> dict[str, Any]:
    """A message of the circle of ``secret`` as our node sends it (every v1 key), dated now."""
    ts = int(time.time()) if ts is None else ts
    msg = compose_message(
        secret,
        circle_id=ids.circle_id(secret),
        channel_id=channel,
        author_node_id=author,
        display_name=name,
        text=text,
        created_ts=ts,
        msg_id=ids.new_msg_id(author, ts),
        encrypt=encrypt,
    )
    return to_wire(msg)


class Node:
    """One node: its home, its environment, its `felund run` process."""

    def __init__(self, home: Path, **overrides: str) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FELUND_")}
        self.env.update(
            {
                "FELUND_HOME": str(home),
                "FELUND_METRICS_PORT": "0",
                "FELUND_LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.update(overrides)
        self.proc: subprocess.Popen[bytes] | None = None
        self.wrap: list[str] = []  # a command prefix, e.g. nsenter into a test's mount namespace
        self.circle_id = ""  # set by fixtures that create a circle
        self.log_path = home.parent / f"{home.name}.log"

    def cli(
        self, *args: str, stdin: bytes | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run `felund ARGS` against this node."""
        raw = subprocess.run(  # noqa: PLW1510 - the caller decides what a failure means
            [*self.wrap, *FELUND, *args],
            input=stdin,
            capture_output=True,
            env=self.env,
            timeout=timeout,
            cwd=REPO,
        )
        proc = subprocess.CompletedProcess(
            raw.args, raw.returncode, raw.stdout.decode(), raw.stderr.decode()
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"felund {' '.join(args)} -> {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def json(self, *args: str) -> Any:
        """Run a command with --json and parse its output."""
        return json.loads(self.cli(*args, "--json").stdout)

    def start(self, wait: bool = True) -> None:
        """`felund run` in the background; returns once every child serves."""
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.wrap, *FELUND, "run"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        if wait:
            wait_for(self._store_running, what="the node to start")

    def log_events(self) -> list[dict[str, Any]]:
        """The node's JSON log lines so far."""
        return [
            json.loads(line)
            for line in self.log_path.read_text().splitlines()
            if line.startswith("{")
        ]

    def _store_running(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"felund run exited with {self.proc.returncode}:\n"
                + self.log_path.read_text()[-3000:]
            )
        st = self.cli("status", "--json", check=False)
        if st.returncode != 0:
            return False
        services = json.loads(st.stdout).get("services", {})
        return bool(services) and all(s["state"] == "running" for s in services.values())

    def status(self) -> dict[str, Any]:
        """`felund status --json`."""
        result: dict[str, Any] = self.json("status")
        return result

    def service_pid(self, name: str) -> int:
        """The pid of one of the node's children."""
        pid = self.status()["services"][name]["pid"]
        assert isinstance(pid, int)
        return pid

    def metrics(self) -> str:
        """The text of the node's /metrics."""
        url = self.status()["metrics_url"]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback URL
            text: str = resp.read().decode()
            return text

    def stop(self) -> int | None:
        """SIGTERM the node and wait for it; its exit status."""
        if self.proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=5)
        self.proc = None
        self.log.close()
        return code


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None."""
    return next(_samples(text, name, labels), None)


def metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples with these labels, whatever their others (0 if none)."""
    return sum(_samples(text, name, labels))


def _samples(text: str, name: str, labels: dict[str, str]) -> Iterator[float]:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        found = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if "=" in part)
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            yield float(value)


DB_FILES = ("felund.db", "felund.db-wal", "felund.db-shm")


def break_store(node: Node, kept: Path) -> None:
    """Make a running node's store exit at every start (until ``mend_store``): its
    database files move to ``kept`` (stopped first: no write between the moves),
    garbage takes their place, and the store is killed."""
    pid = node.service_pid("store")
    kept.mkdir(parents=True, exist_ok=True)
    os.kill(pid, signal.SIGSTOP)
    try:
        for name in DB_FILES:
            if (node.home / name).exists():
                shutil.move(node.home / name, kept / name)
        (node.home / "felund.db").write_bytes(b"this is not a database" * 100)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the supervisor may have killed it
            os.kill(pid, signal.SIGKILL)


def mend_store(node: Node, kept: Path) -> None:
    """Put back the database files ``break_store`` kept."""
    (node.home / "felund.db").unlink()
    for name in DB_FILES:
        if (kept / name).exists():
            shutil.move(kept / name, node.home / name)


@contextlib.contextmanager
def running_node(home: Path, name: str) -> Iterator[Node]:
    """A started node (its own gossip port, on 127.0.0.1) with one circle; stopped at the end."""
    node = Node(home, FELUND_GOSSIP_PORT=str(free_port()))
    node.cli("init", "--name", name, "--bind", "127.0.0.1")
    node.start()
    node.circle_id = node.json("invite")["circle_id"]
    try:
        yield node
    finally:
        node.stop()


class Relay:
    """`felund relay serve` on a fixed port of 127.0.0.1, restartable on the same database."""

    def __init__(self, directory: Path, *args: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.args = args  # extra `relay serve` options, e.g. --require-signatures
        self.port = free_port()
        self.db = directory / "relay.db"
        self.log_path = directory / "relay.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FELUND_", "PROMETHEUS_"))}
        env["FELUND_LOG_FORMAT"] = "json"
        argv = [*FELUND, "relay", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*argv, "--db", str(self.db), *self.args],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=log,
            )
        wait_for(self._healthy, timeout=30, what="the relay to answer")

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{self.url}/v1/health", timeout=2) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def requests(self, path: str) -> list[dict[str, Any]]:
        lines = [json.loads(x) for x in self.log_text().splitlines() if x.startswith("{")]
        return [e for e in lines if e.get("event") == "http.request" and e.get("path") == path]


PY_NODE = "pythonnode0001"  # Python's node in the relay tests: signed_call signs as it
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def signed_call(relay: Relay, secret: str, method: str, path: str, body: Any = None) -> Any:
    """One signed call (``path`` after /v1, query included) as a node of the circle makes it.

    urllib, never a proxy: in a browser test Playwright's asyncio loop owns the thread.
    """
    raw = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    sign_path = path.partition("?")[0]
    headers = signed_headers(crypto.api_signing_key(secret), PY_NODE, method, sign_path, raw)
    headers["Content-Type"] = "application/json"
    request = urllib.request.Request(  # noqa: S310 - the loopback URL of a test relay
        f"{relay.url}/v1{path}", data=raw or None, method=method, headers=headers
    )
    with _NO_PROXY.open(request, timeout=10) as resp:
        return json.loads(resp.read())


_TMUX_SERVERS = itertools.count()
# Our own tmux server: a bare config (nothing of the user's), no status line
# (the pane is the whole window), and a pane that stays after its command
# exits so a test can still read the screen.
_TMUX_CONFIG = """\
set -g status off
set -g remain-on-exit on
set -g history-limit 0
set -g escape-time 0
"""


class Tmux:
    """A private tmux server (``-L``, never the user's) running one command, for screen tests."""

    def __init__(self, binary: str = "tmux") -> None:
        found = shutil.which(binary)
        if found is None:
            raise FileNotFoundError(f"{binary} is not installed")
        self.binary = found
        self.socket = f"felund-test-{os.getpid()}-{next(_TMUX_SERVERS)}"
        self.dir = Path(tempfile.mkdtemp(prefix="felund-tmux-"))
        self.config = self.dir / "tmux.conf"
        self.config.write_text(_TMUX_CONFIG)
        self.status_file = self.dir / "exit-status"
        self.target = "ui:0.0"
        self.started = False
        self.socket_path: Path | None = None

    def _tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run(
            [self.binary, "-L", self.socket, "-f", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} -> {proc.returncode}: {proc.stderr}")
        return proc.stdout

    def start(self, cmd: list[str], env: dict[str, str], cols: int = 100, rows: int = 30) -> None:
        """Run ``cmd`` (argv) in a detached session of ``cols`` x ``rows``."""
        # tmux may mark a pane dead before it has reaped its process (no status
        # yet), so a shell writes the exit status down; ``cmd`` is its arguments.
        argv = ["sh", "-c", '"$@"; echo $? > "$0"', str(self.status_file), *cmd]
        # The server takes its environment from the client that starts it.
        self._tmux(
            "new-session", "-d", "-s", "ui", "-x", str(cols), "-y", str(rows), "--", *argv, env=env
        )
        self.started = True
        self.socket_path = Path(self._tmux("display-message", "-p", "#{socket_path}").strip())

    def send_keys(self, *keys: str, literal: bool = False) -> None:
        """Type keys: tmux key names (``Enter``, ``C-q``, ``F1``), or text with ``literal``."""
        self._tmux("send-keys", "-t", self.target, *(["-l"] if literal else []), *keys)

    def capture(self) -> str:
        """The visible screen, one line per row."""
        return self._tmux("capture-pane", "-p", "-t", self.target)

    def wait_for_text(self, text: str, timeout: float = 10.0) -> str:
        """The screen, once it shows ``text``; AssertionError with the screen after ``timeout``."""
        return self.wait_until(lambda screen: text in screen, timeout, repr(text))

    def wait_until(
        self, check: Callable[[str], bool], timeout: float = 10.0, what: str = "its condition"
    ) -> str:
        """The screen, once ``check(screen)`` holds; bounded in time."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.capture()
            if check(screen):
                return screen
            time.sleep(0.05)
        raise AssertionError(f"screen never showed {what} in {timeout} s:\n{screen}")

    def resize(self, cols: int, rows: int) -> None:
        """Resize the window (and so the pane, and the program's terminal)."""
        self._tmux("resize-window", "-t", "ui", "-x", str(cols), "-y", str(rows))

    def pane_exit(self) -> int | None:
        """The command's exit status once it has exited, else None."""
        try:
            status = self.status_file.read_text().strip()
        except FileNotFoundError:
            return None
        return int(status) if status.isdigit() else None  # None: still being written

    def kill(self) -> None:
        """Stop the server and everything in it."""
        if self.started:
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self._tmux("kill-server")
            self.started = False
            if self.socket_path is not None:  # tmux leaves its socket file behind
                self.socket_path.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- a real browser (Debian's chromium driven by Playwright) ----------------------------------
CHROMIUM = "/usr/bin/chromium"
# Headless Chromium as a test needs it: no sandbox (containers), no GPU, and
# nothing that phones home or downloads while a test runs.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def browser_missing() -> str | None:
    """Why a browser test cannot run here (no chromium, no playwright), or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing; CI installs it with apt-get install -y chromium"
    try:
        import playwright.sync_api  # noqa: F401, PLC0415 - optional: only the browser tests need it
    except ImportError:
        return "the playwright package is missing (pip install -e '.[dev]')"
    return None


@contextlib.contextmanager
def browser() -> Iterator[Browser]:
    """Playwright's chromium on Debian's binary (never a downloaded one), closed at the end.

    Give each test its own ``browser.new_context()``: contexts do not share
    IndexedDB, cookies or caches.
    """
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - optional dependency

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True, timeout=60_000
        )
        try:
            yield chromium
        finally:
            chromium.close()
