"""Real felund nodes for tests and benchmarks: a FELUND_HOME each, the real CLI, real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

FELUND = [sys.executable, "-m", "felund"]
REPO = Path(__file__).resolve().parents[1]


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
        self.circle_id = ""  # set by fixtures that create a circle
        self.log_path = home.parent / f"{home.name}.log"

    def cli(
        self, *args: str, stdin: bytes | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run `felund ARGS` against this node."""
        raw = subprocess.run(  # noqa: PLW1510 - the caller decides what a failure means
            [*FELUND, *args],
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
            [*FELUND, "run"], env=self.env, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO
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
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        found = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if "=" in part)
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            return float(value)
    return None


class Relay:
    """`felund relay serve` on a fixed port of 127.0.0.1, restartable on the same database."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
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
                [*argv, "--db", str(self.db)], cwd=REPO, env=env, stdout=log, stderr=log
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
