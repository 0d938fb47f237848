"""What starting the ``felund`` command imports, checked on the source.

A command's start was mostly imports it never used (issue 20: ~180 ms for one
`felund send`); the command's entry imports, at module level and through every
felund module it reaches so, none of the machinery below. Imports under
``TYPE_CHECKING``, inside functions, or through ``felund.lazy`` run later or never.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENTRY = "felund.__main__"
# Never loaded by a command reaching a running node: logs, metrics, the store's
# engine, the service runtime, asyncio (gossip, relay), the HTTP stacks, the keys
# (the store signs what a command posts), the database driver, the chat model and
# pyzmq (a command speaks ZMTP itself, felund.bus.dealer: pyzmq's import was half a
# command's start) and the sockets API's wrapper (the dealer uses _socket; only reading
# the interfaces for an invite uses socket); and what costs a start a few ms for nothing
# it does: dataclasses (it loads inspect, and each frozen class execs its methods: the
# config, layout and context are NamedTuples), shutil (argparse's default help width; it
# loads bz2 and lzma), signal (`felund stop`'s), tomllib (the config's parsed copy is
# read while the file is unchanged), secrets and random (ids take os.urandom), and
# hashlib (OpenSSL's start: a command that reads hashes nothing, one that posts at its id).
NOT_AT_START = (
    "zmq",
    "hashlib",
    "tomllib",
    "secrets",
    "random",
    "dataclasses",
    "inspect",
    "shutil",
    "signal",
    "structlog",
    "prometheus_client",
    "aiohttp",
    "asyncio",
    "zmq.asyncio",
    "cryptography",
    "sqlite3",
    "tempfile",
    "socket",
    "felund.v1.chatmodel",
    "felund.v1.events",
    "felund.trust.channels",
    "felund.logs",
    "felund.metrics",
    "felund.metric_files",
    "felund.actor.runtime",
    "felund.store.ops",
    "felund.store.database",
    "felund.v1.wire",
)


def _file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _run_at_import(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements a module runs when imported (not function bodies, not type-only)."""
    found: list[ast.stmt] = []
    for stmt in body:
        if isinstance(stmt, ast.If):
            found += _run_at_import(stmt.orelse if _type_checking(stmt.test) else stmt.body)
            if not _type_checking(stmt.test):
                found += _run_at_import(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            found += _run_at_import(stmt.body + stmt.orelse + stmt.finalbody)
            for handler in stmt.handlers:
                found += _run_at_import(handler.body)
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            found.append(stmt)
    return found


def _imported(module: str, stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, ast.Import):
        return [alias.name for alias in stmt.names]
    assert isinstance(stmt, ast.ImportFrom)
    if stmt.level:
        package = module.split(".")
        if _file(module) is not None and _file(module).name != "__init__.py":  # type: ignore[union-attr]
            package = package[:-1]
        package = package[: len(package) - (stmt.level - 1)]
        base = ".".join([*package, *([stmt.module] if stmt.module else [])])
    else:
        base = stmt.module or ""
    # ``from package import name``: a submodule when there is such a file, else an attribute.
    subs = [f"{base}.{a.name}" for a in stmt.names if _file(f"{base}.{a.name}") is not None]
    return [base, *subs]


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_at_start(entry: str) -> set[str]:
    """Every module name importing ``entry`` runs an import of (felund's followed through)."""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        module = todo.pop()
        for name in _with_parents(module):
            if name in seen:
                continue
            seen.add(name)
            path = _file(name)
            if path is None:
                continue  # not ours: recorded, not followed
            tree = ast.parse(path.read_text(), str(path))
            for stmt in _run_at_import(tree.body):
                todo += _imported(name, stmt)
    return seen


def test_the_command_s_entry_imports_no_service_machinery() -> None:
    loaded = imported_at_start(ENTRY)
    assert {"msgpack", "felund.bus.dealer", "felund.store.client"} <= loaded  # the walk follows
    assert sorted(m for m in loaded if m.startswith(NOT_AT_START)) == []


def test_the_walk_sees_what_the_service_runtime_imports() -> None:
    loaded = imported_at_start("felund.actor.runtime")
    assert {"structlog", "felund.metrics", "prometheus_client"} <= loaded
