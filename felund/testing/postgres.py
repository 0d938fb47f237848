"""A real PostgreSQL server for tests: initdb in a temporary directory, unix socket only.

- Runs as an unprivileged user: as root, the data directory is given to
  ``nobody`` and every server command runs through ``runuser -u nobody``
  (PostgreSQL refuses to run as root anyway).
- Listens on no TCP address (``listen_addresses=''``): a unix socket in its
  own directory, reached as ``postgresql://felund@/NAME?host=DIR``.
- One server per test session (and xdist worker); each user gets a database
  of its own (``database``), copied from a migrated template: a few ms.
- fsync is off for the tests: they stop the server cleanly (``restart``) or
  kill relays, never the machine, so nothing acknowledged depends on it. The
  benchmarks ask for ``durable`` (fsync on, as an operator runs it), with or
  without ``synchronous_commit`` (off: a commit is acknowledged once in the
  WAL, which reaches the disk within a fraction of a second: it survives a
  crash of any process, and a crash of the machine loses at most that
  fraction and corrupts nothing; the relay's SQLite in WAL mode with
  ``synchronous = NORMAL`` promises the same).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from felund.relay.server.postgres import migrate

USER = "felund"
TEMPLATE = "felund_template"


def pg_bin(name: str) -> str:
    """A PostgreSQL program: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(f"{name} not found: install Debian's postgresql (.ci/run does)")
    return found


class PgServer:
    """A PostgreSQL server of its own in a temporary directory."""

    def __init__(self, *, durable: bool = False, synchronous_commit: bool = True) -> None:
        self.settings = ["-c max_connections=200"]
        if not durable:
            self.settings.append("-c fsync=off")
        if not synchronous_commit:
            self.settings.append("-c synchronous_commit=off")
        self.dir = Path(tempfile.mkdtemp(prefix="felund-pg-"))
        self.data = self.dir / "data"
        self._names = itertools.count(1)
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "nobody")
            self._as_user = ["runuser", "-u", "nobody", "--"]
        self._run(pg_bin("initdb"), "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8")
        self.start()
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        migrate(self.url(TEMPLATE))

    def _run(self, *argv: str) -> None:
        out = subprocess.run(
            [*self._as_user, *argv], capture_output=True, text=True, check=False, cwd=self.dir
        )
        if out.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")

    def url(self, dbname: str) -> str:
        """The URL of one of its databases (over the unix socket)."""
        return f"postgresql://{USER}@/{dbname}?host={self.dir}"

    def start(self) -> None:
        """Start the server and wait until it takes connections."""
        options = " ".join([f"-c listen_addresses='' -k {self.dir}", *self.settings])
        self._run(
            pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "log"),
            "-w",
            "-o",
            options,
            "start",
        )

    def pids(self) -> list[int]:
        """The server's processes: the postmaster and its children (backends, walwriter...)."""
        main = int((self.data / "postmaster.pid").read_text().split()[0])
        found = [main]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(stat.read_text().rpartition(")")[2].split()[1]) == main:
                    found.append(int(stat.parent.name))
        return found

    def stop(self) -> None:
        """Stop the server (fast: sessions are cut, commits are kept)."""
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def database(self, *, migrated: bool = True) -> str:
        """A new database, with the relay's schema unless not ``migrated``; its URL."""
        name = f"relay_{next(self._names)}"
        template = TEMPLATE if migrated else "template0"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.url(name)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
