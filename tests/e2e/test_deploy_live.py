"""A real node watched by a real Prometheus, and a real node under a fake systemd.

- Prometheus (the distribution's package) scrapes a running ``felund run``
  on 127.0.0.1 with the shipped ``deploy/prometheus/prometheus.yml`` and
  alert rules (ports and intervals adapted); we query its HTTP API for
  ``up`` and for ``felund_store_appends_total`` moving after messages are
  sent, and ``promtool check metrics`` must find nothing to say about the
  node's live ``/metrics``.
- systemd's notify protocol: a datagram socket stands in for systemd's
  ``$NOTIFY_SOCKET``; ``felund run`` must send ``READY=1``, then
  ``WATCHDOG=1`` pings, from its main process (``NotifyAccess=main`` in the
  units), and ``STOPPING=1`` and exit status 0 on SIGTERM.

Every wait is bounded in tries and in time; every process started here is
stopped in a ``finally``. Without prometheus/promtool the Prometheus test
skips, or fails under CI (``$CI`` set).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "felund.json"
FELUND = Path(sys.executable).with_name("felund")
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
T = TypeVar("T")
# Everything here is on 127.0.0.1: never through an http_proxy of the environment.
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed; CI installs it with apt-get install -y prometheus"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    what: str, probe: Callable[[], T | None], timeout_s: float, interval_s: float = 0.25
) -> T:
    """Call probe until it returns something other than None; bounded in tries and time."""
    deadline = time.monotonic() + timeout_s
    tries = int(timeout_s / interval_s) + 1
    last_error: Exception | None = None
    for _ in range(tries):
        try:
            result = probe()
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            last_error, result = exc, None
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            break
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} ({last_error})")


def stop(proc: subprocess.Popen[Any]) -> int:
    """SIGTERM, then SIGKILL if it does not exit in time; its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(STOP_TIMEOUT_S)


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- a node ---------------------------------------------------------------------
def felund_env(home: Path) -> dict[str, str]:
    """Our environment minus anything felund, Prometheus or systemd would pick up."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FELUND_", "PROMETHEUS_")) and key != "NOTIFY_SOCKET"
    }
    env.update(FELUND_HOME=str(home), FELUND_LOG_FORMAT="json")
    return env


class Node:
    """A felund home in a temporary directory, and the commands run on it."""

    def __init__(self, home: Path, log: Path, metrics_port: int) -> None:
        self.home = home
        self.log = log
        gossip_port = free_port()
        self.env = felund_env(home)
        self.env["FELUND_METRICS_PORT"] = str(metrics_port)
        self.cli("init", "--bind", HOST, "--port", str(gossip_port), "--name", "deploy-test")

    def cli(self, *args: str, timeout_s: float = 60.0) -> str:
        result = subprocess.run(
            [str(FELUND), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        assert result.returncode == 0, (
            f"felund {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        )
        return result.stdout

    @contextmanager
    def running(self, extra_env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
        with self.log.open("ab") as log:
            proc = subprocess.Popen(
                [str(FELUND), "run"],
                env={**self.env, **(extra_env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            yield proc
        finally:
            stop(proc)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(self.cli("status", "--json", timeout_s=30))
        return status

    def wait_ready(self, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            assert proc.poll() is None, (
                f"felund run exited {proc.returncode}:\n{log_tail(self.log)}"
            )
            status = self.status()
            return status if status.get("running") and status.get("metrics_url") else None

        return wait_for("the node to run", probe, START_TIMEOUT_S, interval_s=0.5)


def require_felund() -> None:
    if not FELUND.exists():
        pytest.fail(f"{FELUND} is missing: install the project with `pip install -e .`")


@pytest.fixture
def deploy_node(tmp_path: Path) -> Node:
    # Named apart from conftest's `node`: this one is only initialised, not started.
    require_felund()
    return Node(tmp_path / "home", tmp_path / "node.log", free_port())


# --- Prometheus -------------------------------------------------------------------
def prometheus_config(directory: Path, node_port: int, relay_port: int) -> Path:
    """The shipped prometheus.yml and rules, pointed at our ports, scraping every second."""
    text = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    for old, new in (
        ('"127.0.0.1:9464"', f'"{HOST}:{node_port}"'),
        ('"127.0.0.1:8080"', f'"{HOST}:{relay_port}"'),
        ("scrape_interval: 15s", "scrape_interval: 1s"),
        ("evaluation_interval: 15s", "evaluation_interval: 1s"),
    ):
        assert text.count(old) == 1, f"deploy/prometheus/prometheus.yml no longer has {old!r}"
        text = text.replace(old, new)
    config = directory / "prometheus.yml"
    config.write_text(text)
    shutil.copy(PROMETHEUS_DIR / "felund.rules.yml", directory / "felund.rules.yml")
    return config


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://{HOST}:{port}"

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with LOCAL.open(url, timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def scalar(self, promql: str) -> float | None:
        """The single value of an instant query, None if it has no result."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


def dashboard_queries() -> list[str]:
    """The dashboard's panel queries, with Grafana's variables expanded as Grafana would."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(DASHBOARD.read_text()))
    return [
        expr.replace("$__rate_interval", "1m").replace("$instance", ".*").replace("$relay", ".*")
        for expr in found
    ]


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[[int, int], Prometheus]]:
    """Start Prometheus scraping a node and a relay at the given ports."""
    binary = tool("prometheus")
    procs: list[subprocess.Popen[bytes]] = []

    def start(node_port: int, relay_port: int) -> Prometheus:
        directory = tmp_path / "prometheus"
        directory.mkdir()
        config = prometheus_config(directory, node_port, relay_port)
        port = free_port()
        log = tmp_path / "prometheus.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address={HOST}:{port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        prom = Prometheus(port)

        def ready() -> bool | None:
            assert proc.poll() is None, f"prometheus exited {proc.returncode}:\n{log_tail(log)}"
            with LOCAL.open(f"{prom.base}/-/ready", timeout=2) as response:
                return True if response.status == 200 else None

        wait_for("Prometheus to be ready", ready, START_TIMEOUT_S)
        return prom

    try:
        yield start
    finally:
        for proc in procs:
            stop(proc)


def test_prometheus_scrapes_a_real_node(
    deploy_node: Node, prometheus_factory: Callable[[int, int], Prometheus]
) -> None:
    node = deploy_node
    promtool = tool("promtool")
    with node.running() as proc:
        status = node.wait_ready(proc)
        metrics_url = status["metrics_url"]
        assert metrics_url.startswith(f"http://{HOST}:")
        node_port = int(urllib.parse.urlsplit(metrics_url).port or 0)
        assert node_port == int(node.env["FELUND_METRICS_PORT"])

        # No relay listens at the relay target: it is down, as for a node without one.
        prom = prometheus_factory(node_port, free_port())
        wait_for(
            "up{job='felund-node'} == 1",
            lambda: True if prom.scalar('up{job="felund-node"}') == 1 else None,
            START_TIMEOUT_S,
        )
        appends = 'sum(felund_store_appends_total{job="felund-node"})'
        before = prom.scalar(appends) or 0.0

        invite = node.cli("invite")
        codes = [line for line in invite.splitlines() if line.startswith("felund1.")]
        assert len(codes) == 1, f"no invite code in {invite!r}"
        circles = node.status()["circles"]
        assert len(circles) == 1, circles
        circle = circles[0]
        circle_id = circle["circle_id"] if isinstance(circle, dict) else circle
        sent = 3
        for number in range(sent):
            node.cli("send", "--circle-id", circle_id, f"deploy test message {number}")
        assert node.status()["messages"] >= sent

        # Each message counts once, whatever scrape saw it first.
        wait_for(
            f"felund_store_appends_total to grow by {sent} in Prometheus",
            lambda: True if (prom.scalar(appends) or 0.0) >= before + sent else None,
            START_TIMEOUT_S,
        )

        # The shipped alert rules load and evaluate against live data.
        groups = prom.get("/api/v1/rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert {rule["name"] for rule in rules} >= {"FelundNodeDown", "FelundStoreErrors"}
        assert all(rule["health"] != "err" for rule in rules), rules

        # Every query of the Grafana dashboard runs, and its messages-stored
        # panel shows the messages (once rate() has two samples to work on).
        queries = dashboard_queries()
        assert queries, "no queries found in deploy/grafana/felund.json"
        for expr in queries:
            prom.query(expr)
        (stored_panel,) = [expr for expr in queries if "felund_store_appends_total" in expr]
        wait_for(
            "the dashboard's messages-stored query to show data",
            lambda: True if prom.query(stored_panel) else None,
            START_TIMEOUT_S,
        )

        # The exposition format of the live endpoint is clean.
        with LOCAL.open(metrics_url, timeout=5) as response:
            exposition = response.read()
        assert b"felund_store_appends_total" in exposition
        check = subprocess.run(
            [promtool, "check", "metrics"],
            input=exposition,
            capture_output=True,
            timeout=60,
            check=False,
        )
        report = (check.stdout + check.stderr).decode(errors="replace")
        assert check.returncode == 0, report
        assert report.strip() == "", f"promtool check metrics:\n{report}"


RELAY_UNIT = ROOT / "deploy" / "systemd" / "system" / "felund-relay.service"


def relay_argv(port: int, db: Path) -> list[str]:
    """felund-relay.service's ExecStart, pointed at this venv, a free port and a temporary db."""
    (line,) = [
        line for line in RELAY_UNIT.read_text().splitlines() if line.startswith("ExecStart=")
    ]
    argv = line.removeprefix("ExecStart=").split()
    replacements = {"8080": str(port), "%S/felund-relay/relay.db": str(db)}
    assert set(replacements) <= set(argv), argv
    return [str(FELUND), *(replacements.get(arg, arg) for arg in argv[1:])]


def test_prometheus_scrapes_a_real_relay(
    tmp_path: Path, prometheus_factory: Callable[[int, int], Prometheus]
) -> None:
    require_felund()
    promtool = tool("promtool")
    env = felund_env(tmp_path / "home")
    # A broken `felund relay` fails here, with what it said (never a skip).
    probe = subprocess.run(
        [str(FELUND), "relay", "serve", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, f"felund relay serve --help -> {probe.returncode}: {probe.stderr}"
    port = free_port()
    argv = relay_argv(port, tmp_path / "relay.db")
    assert argv[argv.index("--host") + 1] == HOST
    log = tmp_path / "relay.log"
    with log.open("ab") as out:
        relay = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        metrics_url = f"http://{HOST}:{port}/metrics"

        def scraped() -> bytes | None:
            assert relay.poll() is None, f"relay exited {relay.returncode}:\n{log_tail(log)}"
            with LOCAL.open(metrics_url, timeout=5) as response:
                body: bytes = response.read()
                return body

        exposition = wait_for("the relay's /metrics", scraped, START_TIMEOUT_S)
        check = subprocess.run(
            [promtool, "check", "metrics"],
            input=exposition,
            capture_output=True,
            timeout=60,
            check=False,
        )
        report = (check.stdout + check.stderr).decode(errors="replace")
        assert check.returncode == 0, report
        assert report.strip() == "", f"promtool check metrics:\n{report}"

        # No node at the node target this time.
        prom = prometheus_factory(free_port(), port)
        wait_for(
            "up{job='felund-relay'} == 1",
            lambda: True if prom.scalar('up{job="felund-relay"}') == 1 else None,
            START_TIMEOUT_S,
        )
    finally:
        stop(relay)


# --- systemd's notify protocol --------------------------------------------------------
UCRED = struct.Struct("3i")  # pid, uid, gid


@contextmanager
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket like systemd's, passing each sender's credentials."""
    directory = tmp_path
    short: str | None = None
    if len(str(tmp_path / "notify")) > 100:  # sun_path holds 108 bytes
        short = tempfile.mkdtemp(prefix="felund-notify-")
        directory = Path(short)
    path = str(directory / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        yield sock, path
    finally:
        sock.close()
        if short is not None:
            shutil.rmtree(short, ignore_errors=True)


def receive(sock: socket.socket, deadline: float) -> tuple[list[str], int] | None:
    """The lines of the next datagram and its sender's pid; None at the deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    sock.settimeout(remaining)
    try:
        data, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
    except TimeoutError:
        return None
    pid = 0
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = UCRED.unpack(payload[: UCRED.size])[0]
    return data.decode().splitlines(), pid


def wait_message(
    sock: socket.socket, wanted: str, timeout_s: float, seen: list[tuple[str, int]]
) -> int:
    """Read datagrams until one has the line ``wanted``; the sender's pid."""
    deadline = time.monotonic() + timeout_s
    for _ in range(10_000):
        got = receive(sock, deadline)
        if got is None:
            break
        lines, pid = got
        seen.extend((line, pid) for line in lines)
        if wanted in lines:
            return pid
    raise AssertionError(f"no {wanted} within {timeout_s:.0f}s; got {seen[-10:]}")


def test_run_speaks_systemds_notify_protocol(tmp_path: Path) -> None:
    require_felund()
    node = Node(tmp_path / "home", tmp_path / "node.log", 0)  # metrics on any free port
    seen: list[tuple[str, int]] = []
    with notify_socket(tmp_path) as (sock, path), node.running({"NOTIFY_SOCKET": path}) as proc:
        # Type=notify: READY=1 once the bus and the store are up.
        pid = wait_message(sock, "READY=1", START_TIMEOUT_S, seen)
        # NotifyAccess=main: it comes from the main process `felund run` became.
        assert pid == proc.pid, f"READY=1 came from pid {pid}, the main process is {proc.pid}"
        status = node.status()
        assert status["services"]["store"]["state"] == "running"

        # WatchdogSec=: pings at the 1 s heartbeat, well inside the 10 s.
        seen.clear()
        first = time.monotonic()
        for _ in range(2):
            assert wait_message(sock, "WATCHDOG=1", 5.0, seen) == proc.pid
        assert time.monotonic() - first < 5.0
        pings = [line for line, _ in seen if line == "WATCHDOG=1"]
        assert 2 <= len(pings) <= 20

        # SIGTERM (systemctl stop): STOPPING=1, then a clean exit.
        proc.send_signal(signal.SIGTERM)
        assert wait_message(sock, "STOPPING=1", STOP_TIMEOUT_S, seen) == proc.pid
        assert proc.wait(STOP_TIMEOUT_S) == 0, log_tail(node.log)
