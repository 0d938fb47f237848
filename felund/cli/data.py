"""``felund`` commands to own one's data: backup, restore, export, import.

A backup is one SQLite file: SQLite's online backup of the node's database
(taken beside a running store, which goes on writing), plus a ``home_files``
table holding the identity and the config. ``restore`` puts it into a home
whose database holds nothing, so the node comes back as itself (same id,
circles, history, peers) and syncs on. ``export`` streams a circle page by
page straight from the database; ``import`` hands the exported wire forms to
the store, which checks every message as if a peer had sent it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from felund import config as config_mod
from felund import home, lazy
from felund.cli.common import CIRCLE_HELP, UNVERIFIED_HELP, context, err, message_line, out
from felund.errors import FelundError, InvalidMessage, UsageError
from felund.files import write_private
from felund.protocol import CONTROL_CHANNEL, MAX_POST_BATCH, OP_APPEND, OP_CIRCLES
from felund.store.client import NodeClient
from felund.v1 import ids

if TYPE_CHECKING:
    import sqlite3

    from felund.store import blocks, database, opening
    from felund.v1 import wire as v1_wire
else:  # loaded by the commands that use them (``felund.lazy``)
    sqlite3 = lazy.module("sqlite3")
    blocks, database = lazy.module("felund.store.blocks"), lazy.module("felund.store.database")
    opening, v1_wire = lazy.module("felund.store.opening"), lazy.module("felund.v1.wire")

HOME_FILES = "home_files"  # the backup's table of the home's files: name -> text
MAX_IMPORT_LINE = 256 * 1024  # bytes; an exported message is well under 100 kB
MAX_IMPORT_BATCH_BYTES = 2 * 1024 * 1024  # per store.append, far below the bus's frame cap
_EXPORT_KEYS = (
    "msg_id",
    "circle_id",
    "channel_id",
    "author_node_id",
    "display_name",
    "created_ts",
    "text",
    "verified",
)


# --- backup and restore -------------------------------------------------------
def cmd_backup(args: argparse.Namespace) -> None:
    """Write a backup of this node (database, identity, config) to PATH, running or not."""
    ctx = context()
    target = Path(args.path).expanduser().resolve()
    if target.exists():
        raise UsageError(f"{target} exists: give a new file name")
    if not ctx.layout.database.exists():
        raise UsageError(f"there is no database at {ctx.layout.database}: nothing to back up")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    started = time.time()
    try:
        db = opening.open_database(ctx.layout, ctx.config.store.synchronous)
        try:
            db.backup_to(tmp)
        finally:
            db.close()
        circles, messages = _seal_backup(tmp, _home_files(ctx.layout))
        _fsync(tmp)
        tmp.replace(target)
        _fsync(target.parent)
    finally:
        for suffix in database.DB_SUFFIXES:
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    home.record_backup(ctx.layout, target, started)
    out(
        f"backup of node {ctx.node_id}: {circles} circles, {messages} messages, "
        f"{target.stat().st_size} bytes in {target} ({time.time() - started:.1f} s)"
    )


def _home_files(lay: home.Layout) -> dict[str, str]:
    files = {home.IDENTITY_FILE: lay.identity_file.read_text()}
    if lay.config_file.exists():
        files[config_mod.CONFIG_FILE_NAME] = lay.config_file.read_text()
    return files


def _seal_backup(path: Path, files: dict[str, str]) -> tuple[int, int]:
    """Add the home's files to a copied database and check it; (circles, messages)."""
    dst = sqlite3.connect(path, isolation_level=None)
    try:
        # One file that needs no -wal beside it.
        dst.execute("PRAGMA journal_mode=DELETE")
        dst.execute(f"CREATE TABLE {HOME_FILES} (name TEXT PRIMARY KEY, content TEXT NOT NULL)")
        dst.executemany(f"INSERT INTO {HOME_FILES} VALUES (?, ?)", sorted(files.items()))  # noqa: S608
        verdict = dst.execute("PRAGMA integrity_check").fetchone()[0]
        if verdict != "ok":
            raise FelundError(f"the backup does not verify ({verdict}); nothing was written")
        circles = dst.execute("SELECT count(*) FROM circles").fetchone()[0]
        messages = dst.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        dst.close()
    return int(circles), int(messages)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _read_backup(path: Path) -> Iterator[tuple[sqlite3.Connection, dict[str, str]]]:
    """A backup file opened read-only, with its home files; FelundError if it is none."""
    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    src = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        try:
            verdict = src.execute("PRAGMA integrity_check").fetchone()[0]
            files = dict(src.execute(f"SELECT name, content FROM {HOME_FILES}"))  # noqa: S608
        except sqlite3.DatabaseError:
            raise UsageError(f"{path} is not a felund backup") from None
        if verdict != "ok":
            raise FelundError(f"{path} is damaged ({verdict})")
        try:
            node_id = json.loads(files[home.IDENTITY_FILE])["node_id"]
        except (KeyError, ValueError, TypeError):
            node_id = None
        if not isinstance(node_id, str) or not ids.is_hex(node_id, 24):
            raise UsageError(f"{path} is not a felund backup (no node identity)")
        yield src, files
    finally:
        src.close()


def cmd_restore(args: argparse.Namespace) -> None:
    """Restore a backup into a home that holds no node yet (the node stopped)."""
    source = Path(args.path).expanduser().resolve()
    root = home.home_from_env()
    with _read_backup(source) as (src, files):
        config_text = files.get(config_mod.CONFIG_FILE_NAME)
        own_config = (root / config_mod.CONFIG_FILE_NAME).exists()
        if config_text is not None:
            # Checked before anything is written: the restored node must start.
            config_mod.build(_parse_toml_text(config_text), {})
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if config_text is not None and not own_config:
            write_private(root / config_mod.CONFIG_FILE_NAME, config_text)
        cfg = config_mod.load(root)
        lay = home.layout(root, cfg)
        home.prepare(lay)
        lock = home.NodeLock(lay)
        home.require_free(lock)
        try:
            _refuse_if_in_use(lay)
            tmp = lay.database.with_name(f".{lay.database.name}.{os.getpid()}.restore")
            database.make_private(tmp)
            dst = sqlite3.connect(tmp, isolation_level=None)
            try:
                src.backup(dst)
                dst.execute(f"DROP TABLE {HOME_FILES}")
                dst.execute("PRAGMA journal_mode=WAL")
            finally:
                dst.close()
            for suffix in database.DB_SUFFIXES:
                Path(f"{lay.database}{suffix}").unlink(missing_ok=True)
            tmp.replace(lay.database)
            write_private(lay.identity_file, files[home.IDENTITY_FILE])
            if config_text is not None and own_config:
                kept = root / f"{config_mod.CONFIG_FILE_NAME}.from-backup"
                write_private(kept, config_text)
                err(f"this home's own config is kept; the backup's is in {kept}")
            db = database.Database(lay.database, cfg.store.synchronous)
            try:
                circles, messages = len(db.circles()), db.message_count()
            finally:
                db.close()
            home.record_circles(lay, circles)
        finally:
            lock.release()
    node_id = json.loads(files[home.IDENTITY_FILE])["node_id"]
    out(f"restored node {node_id}: {circles} circles, {messages} messages in {root}")
    err("start it with: felund run")


def _parse_toml_text(text: str) -> dict[str, Any]:
    import tomllib  # noqa: PLC0415 - only restore reads a config from elsewhere

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"the backup's config is invalid: {exc}") from None


def _refuse_if_in_use(lay: home.Layout) -> None:
    """UsageError unless the home's database is missing or holds neither circles nor messages."""
    if not lay.database.exists():
        return
    db = sqlite3.connect(f"{lay.database.as_uri()}?mode=ro", uri=True)
    try:
        held = [
            db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
            for t in ("circles", "messages")
        ]
    except sqlite3.DatabaseError:
        held = [0, 0]  # an empty or unreadable file: nothing to lose
    finally:
        db.close()
    if any(held):
        raise UsageError(
            f"{lay.home} holds a node ({held[0]} circles, {held[1]} messages): "
            "restore into an empty FELUND_HOME"
        )


# --- export and import ------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> None:
    """Write every message of a circle (or one channel) to stdout, oldest first."""
    ctx = context()
    db = opening.open_database(ctx.layout, ctx.config.store.synchronous)
    try:
        if db.circle(args.circle_id) is None:
            raise UsageError(f"this node is not in circle {args.circle_id[:64]!r}")
        write = sys.stdout.write
        hidden = set(blocks.blocked(db))  # the text is for reading: blocked nodes stay out
        for row in db.circle_rows(args.circle_id, args.channel):
            if args.format == "jsonl":
                record = {k: row[k] for k in _EXPORT_KEYS}
                record["wire"] = row["wire"]
                write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
                continue
            readable = row["channel_id"] != CONTROL_CHANNEL or args.channel
            if readable and row["author_node_id"] not in hidden:
                write(message_line(row) + "\n")
        sys.stdout.flush()
    finally:
        db.close()


def cmd_import(args: argparse.Namespace, node: NodeClient) -> None:
    """Add the messages of an export (jsonl) to a circle of this node; each checked by the store."""
    circles = {c["circle_id"] for c in node.call(OP_CIRCLES, {})["circles"]}
    if args.circle_id not in circles:
        raise UsageError(f"this node is not in circle {args.circle_id[:64]!r}")
    counts: collections.Counter[str] = collections.Counter()
    problems: list[str] = []

    def note(number: int, what: str) -> None:
        counts["unreadable"] += 1
        if len(problems) < 3:
            problems.append(f"line {number}: {what}")

    def send(batch: list[dict[str, Any]]) -> None:
        answer = node.call(OP_APPEND, {"origin": "import", "msgs": batch})
        for wire, result in zip(batch, answer["results"], strict=True):
            counts[result.partition(":")[0]] += 1
            if result.startswith("rejected:") and len(problems) < 3:
                problems.append(f"message {wire['msg_id']}: {result}")

    with _input(args.path) as fh:
        _stream_wires(fh, args.circle_id, note, send, counts)
    err(
        f"imported {counts['stored']} messages; {counts['duplicate']} already held; "
        f"{counts['rejected']} refused by the store; {counts['other_circle']} of other circles "
        f"skipped; {counts['unreadable']} unreadable lines"
    )
    for problem in problems:
        err(f"  {problem}")
    if counts["rejected"] or counts["unreadable"]:
        raise SystemExit(1)


@contextlib.contextmanager
def _input(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        fh = Path(path).open("rb")  # noqa: SIM115 - closed below; only the open is guarded
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        yield fh


def _stream_wires(
    fh: IO[bytes],
    circle_id: str,
    note: Callable[[int, str], None],
    send: Callable[[list[dict[str, Any]]], None],
    counts: collections.Counter[str],
) -> None:
    """Read jsonl lines, batch the wire forms of ``circle_id``, hand each batch to ``send``."""
    batch: list[dict[str, Any]] = []
    size = 0
    for number, line in enumerate(_lines(fh), start=1):
        if line is None:
            note(number, f"longer than {MAX_IMPORT_LINE} bytes")
            continue
        if not line.strip():
            continue
        try:
            wire = json.loads(line)["wire"]
            _, wire_circle, _ = v1_wire.check_shape(wire)
        except (ValueError, KeyError, TypeError):
            note(number, "not a line of `felund export --format jsonl`")
            continue
        except InvalidMessage as exc:
            note(number, f"not a message ({exc.kind})")
            continue
        if wire_circle != circle_id:
            counts["other_circle"] += 1
            continue
        batch.append(wire)
        size += len(line)
        if len(batch) == MAX_POST_BATCH or size >= MAX_IMPORT_BATCH_BYTES:
            send(batch)
            batch, size = [], 0
    if batch:
        send(batch)


def _lines(fh: IO[bytes]) -> Iterator[bytes | None]:
    """The lines of ``fh``, each at most MAX_IMPORT_LINE bytes; None for a longer one."""
    while True:
        line = fh.readline(MAX_IMPORT_LINE + 1)
        if not line:
            return
        if len(line) > MAX_IMPORT_LINE and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip the rest of it
                line = fh.readline(MAX_IMPORT_LINE)
            yield None
            continue
        yield line


# --- the parser -----------------------------------------------------------------
def add_commands(sub: Any, channel_arg: Callable[[str], str]) -> None:
    """Add backup, restore, export and import to the ``felund`` parser."""
    p = sub.add_parser("backup", help="write a backup of this node (it may be running) to PATH")
    p.add_argument("path", metavar="PATH", help="a new file")
    p.set_defaults(func=cmd_backup, offline=True)

    p = sub.add_parser("restore", help="restore a backup into an empty FELUND_HOME")
    p.add_argument("path", metavar="PATH", help="a file written by `felund backup`")
    p.set_defaults(func=cmd_restore, offline=True)

    p = sub.add_parser(
        "export",
        help="write a whole circle's messages to stdout",
        description=f"Write a whole circle's messages to stdout. In text, {UNVERIFIED_HELP}.",
    )
    p.add_argument("--circle-id", required=True, help=CIRCLE_HELP)
    p.add_argument("--channel", type=channel_arg, help="only this channel")
    p.add_argument(
        "--format", choices=("jsonl", "txt"), default="jsonl", help="JSON lines, or text"
    )
    p.set_defaults(func=cmd_export, offline=True)

    p = sub.add_parser("import", help="add the messages of a jsonl export to a circle")
    p.add_argument("--circle-id", required=True, help=CIRCLE_HELP)
    p.add_argument("path", metavar="PATH", help="a file of `felund export --format jsonl`, or -")
    p.set_defaults(func=cmd_import)
