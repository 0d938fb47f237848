"""A real relay server (`felund relay serve`) for tests, and calls signed as a node makes them."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from felund.relay.client import signed_headers
from felund.testing.processes import FELUND, REPO, free_port, terminate
from felund.testing.wait import wait_for
from felund.v1 import crypto


class Relay:
    """`felund relay serve` on a fixed port of 127.0.0.1, restartable on the same database."""

    def __init__(self, directory: Path, *args: str, db: str = "") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.args = args  # extra `relay serve` options, e.g. --require-signatures
        self.port = free_port()
        self.db = db or str(directory / "relay.db")  # a SQLite file or a postgresql:// URL
        self.log_path = directory / "relay.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FELUND_", "PROMETHEUS_"))}
        env["FELUND_LOG_FORMAT"] = "json"
        argv = [*FELUND, "relay", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*argv, "--db", self.db, *self.args],
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
        terminate(self.proc, grace=15)
        self.proc = None

    def metrics(self) -> str:
        """The text of the relay's /metrics."""
        with _NO_PROXY.open(f"{self.url}/metrics", timeout=5) as resp:
            text: str = resp.read().decode()
            return text

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
