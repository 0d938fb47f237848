"""Real felund nodes for tests and benchmarks: a FELUND_HOME each, the real CLI, real processes.

A test drives a node with its CLI (``Node.cli``, one process per command, as
a user does). What a test only reads, and every wait, goes over the node's
own bus instead (``Node.status``, ``Node.call``): a request on an open
socket costs a millisecond where a ``felund`` process costs ~0.4 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from felund.actor.context import Context, load_context
from felund.bus.sockets import Bus, Subscriber
from felund.cli.main import status_of
from felund.errors import RPCTimeout
from felund.protocol import OP_INBOX, SVC_CLI
from felund.store.client import BusNode
from felund.testing.processes import FELUND, REPO, free_port, terminate
from felund.testing.wait import wait_for

START_TIMEOUT_S = 30.0


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
        # A command prefix, e.g. nsenter into a test's mount namespace. A wrapped node's
        # sockets may be out of this process's reach: it is read with the command.
        self.wrap: list[str] = []
        # The felund to run, and where: another checkout's (the bench's "before" column).
        self.felund, self.repo = FELUND, REPO
        self.circle_id = ""  # set by fixtures that create a circle
        self.log_path = home.parent / f"{home.name}.log"
        self._ctx: Context | None = None
        self._buses: list[Bus] = []  # the subscribers' (``subscribe``), closed at ``stop``

    def cli(
        self, *args: str, stdin: bytes | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run `felund ARGS` against this node."""
        raw = subprocess.run(  # noqa: PLW1510 - the caller decides what a failure means
            [*self.wrap, *self.felund, *args],
            input=stdin,
            capture_output=True,
            env=self.env,
            timeout=timeout,
            cwd=self.repo,
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
        """`felund run` in the background; returns once every child serves (has heartbeated)."""
        self._close_buses()  # a killed run's subscribers: this run binds its endpoints anew
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.wrap, *self.felund, "run"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.repo,
        )
        if wait:
            wait_for(self._serving, timeout=START_TIMEOUT_S, what="the node to start")

    def running(self) -> bool:
        """Whether this node's `felund run` (started by ``start``) is alive."""
        return self.proc is not None and self.proc.poll() is None

    def _serving(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"felund run exited with {self.proc.returncode}:\n"
                + self.log_path.read_text()[-3000:]
            )
        if self.wrap:
            st = self.cli("status", "--json", check=False)
            if st.returncode != 0:
                return False
            services = json.loads(st.stdout).get("services", {})
        else:
            try:
                services = self.supervisor()["services"]
            except RPCTimeout:  # not bound yet: the request waits in the socket meanwhile
                return False
        return bool(services) and all(s["state"] == "running" for s in services.values())

    def _context(self) -> Context:
        assert self.running(), f"{self.home.name} is not running: read it with the CLI"
        assert not self.wrap, f"{self.home.name} runs wrapped: read it with the CLI"
        if self._ctx is None:
            self._ctx = load_context(self.env)
        return self._ctx

    @contextlib.contextmanager
    def _client(self) -> Iterator[tuple[BusNode, Context]]:
        """The node's bus as one ``felund`` command reaches it (it asks the supervisor
        once), in this process: a few milliseconds where the command takes ~0.4 s."""
        ctx = self._context()
        client = BusNode(ctx)
        try:
            yield client, ctx
        finally:
            client.close()

    def _close_buses(self) -> None:
        for bus in self._buses:
            bus.close()
        self._buses.clear()

    def call(self, op: str, body: dict[str, Any] | None = None) -> Any:
        """A store operation (``felund.protocol.OP_*``) over the running node's bus."""
        with self._client() as (client, _):
            return client.call(op, body or {})

    def subscribe(self, *prefixes: str) -> Subscriber:
        """A subscriber to the node's events (closed at ``stop``).

        Subscribing takes a moment to reach the publishers: wait for one event
        (a heartbeat) before relying on the subscription.
        """
        ctx = self._context()
        bus = Bus(ctx.layout, SVC_CLI, ctx.config.bus)
        self._buses.append(bus)
        return bus.subscriber(*prefixes)

    def inbox(self, circle_id: str, channel: str = "", limit: int = 100_000) -> list[Any]:
        """The newest messages of a circle (or of one channel), as ``felund inbox`` reads them."""
        body = {"circle_id": circle_id, "channel_id": channel, "limit": limit}
        msgs: list[Any] = self.call(OP_INBOX, body)["msgs"]
        return msgs

    def supervisor(self) -> dict[str, Any]:
        """The supervisor's status (``supervisor.status``) over the running node's bus."""
        with self._client() as (client, _):
            status = client.supervisor_status()
            assert status is not None
            return status

    def gossip_serving(self) -> bool:
        """Whether this run's gossip serves peers: it does once its index has loaded
        (``gossip.ready``); a peer dialing it before then waits for the load."""
        pid = self.supervisor()["services"]["gossip"]["pid"]
        events = self.log_events()
        return any(e.get("event") == "gossip.ready" and e.get("pid") == pid for e in events)

    def log_events(self) -> list[dict[str, Any]]:
        """The node's JSON log lines so far."""
        return [
            json.loads(line)
            for line in self.log_path.read_text().splitlines()
            if line.startswith("{")
        ]

    def status(self) -> dict[str, Any]:
        """What `felund status --json` prints; read in-process over the bus while the node
        runs, from the command while it does not (or starts, stops, or runs wrapped)."""
        if self.running() and not self.wrap:
            with self._client() as (client, ctx), contextlib.suppress(RPCTimeout):
                return status_of(client, ctx)
        result: dict[str, Any] = self.json("status")
        return result

    def service_pid(self, name: str) -> int:
        """The pid of one of the node's children."""
        pid = self.status()["services"][name]["pid"]
        assert isinstance(pid, int)
        return pid

    def pids(self) -> list[int]:
        """The node's processes: the supervisor and every running child."""
        sup = self.supervisor()
        return [sup["pid"], *(s["pid"] for s in sup["services"].values() if s["pid"])]

    def metrics(self) -> str:
        """The text of the node's /metrics."""
        url = self.status()["metrics_url"]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback URL
            text: str = resp.read().decode()
            return text

    def stop(self) -> int | None:
        """SIGTERM the node and wait for it; its exit status."""
        self._close_buses()
        if self.proc is None:
            return None
        code = terminate(self.proc, grace=20)
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
