"""The ``felund`` command.

Every command works whether the node runs or not (see ``felund.store.client``).
A user's mistake (wrong argument, unknown circle, bad invite code) gets
one line on stderr and exit status 2; a node that stops answering, exit
status 1. Never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import select
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from felund import __version__, home, lazy, netaddr
from felund import config as config_mod
from felund.actor.context import Context, load_context
from felund.cli import blocks as cli_blocks
from felund.cli import chat as cli_chat
from felund.cli import data as cli_data
from felund.cli.common import (
    CIRCLE_HELP,
    JSON_HELP,
    UNVERIFIED_HELP,
    channel_arg,
    context,
    err,
    json_out,
    message_line,
    out,
)
from felund.errors import (
    ConfigError,
    DatabaseUnavailable,
    DiskFull,
    FelundError,
    InvalidMessage,
    RPCError,
    RPCTimeout,
    ServiceDown,
    UsageError,
)
from felund.files import write_private
from felund.protocol import (
    DEFAULT_CHANNEL,
    ERR_DISK_FULL,
    ERR_INTERNAL,
    MAX_POST_BATCH,
    OP_CIRCLE_CREATE,
    OP_CIRCLE_JOIN,
    OP_CIRCLES,
    OP_INBOX,
    OP_INVITE,
    OP_PEERS,
    OP_POST,
    OP_SETTINGS,
    OP_STATS,
    SVC_GOSSIP,
    SVC_RELAY_SYNC,
    SVC_STORE,
)
from felund.store.client import BusNode, NodeClient, find_running, open_node
from felund.v1 import ids

if TYPE_CHECKING:
    import signal
    import sqlite3

    from felund.store import database, opening
    from felund.v1 import invite, wire
else:  # loaded by the commands that use them: send, inbox, status need none (``felund.lazy``)
    sqlite3 = lazy.module("sqlite3")  # an except clause names it only when something raised
    signal = lazy.module("signal")  # `felund stop` alone: its import builds enums of every signal
    database, opening = lazy.module("felund.store.database"), lazy.module("felund.store.opening")
    invite, wire = lazy.module("felund.v1.invite"), lazy.module("felund.v1.wire")

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 1


# --- commands -----------------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> None:
    """Create (or update) the node's home and config."""
    root = home.home_from_env()
    cfg = config_mod.load(root)
    overrides = {"gossip": {}, "node": {}}  # type: dict[str, dict[str, Any]]
    if args.bind is not None:
        overrides["gossip"]["bind"] = args.bind
    if args.port is not None:
        overrides["gossip"]["port"] = args.port
    if args.name is not None:
        overrides["node"]["name"] = args.name
    raw = (
        config_mod.parse_toml(root / config_mod.CONFIG_FILE_NAME)
        if (root / config_mod.CONFIG_FILE_NAME).exists()
        else {}
    )
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    cfg = config_mod.build(raw, {})
    lay = home.layout(root, cfg)
    home.prepare(lay)
    write_private(
        lay.config_file,
        "# felund node configuration; every key is documented in"
        " config/felund.toml\n\n" + config_mod.render(cfg),
    )
    node_id = home.load_node_id(lay)
    out(f"node {node_id} ready in {root}")
    effective = config_mod.load(root).gossip  # as `felund run` will see it: env wins
    err(f"gossip on {effective.bind}:{effective.port}; start it with: felund run")


def cmd_run(args: argparse.Namespace) -> None:
    """Run the node in the foreground (the supervisor takes over this process)."""
    ctx = load_context()  # fail here, in one clear line, on a bad config
    with contextlib.suppress(DiskFull):  # the store waits for room by itself
        # ... or on a database that lost its circles (DatabaseLost).
        opening.open_database(ctx.layout, ctx.config.store.synchronous).close()
    # Named before the exec, so the supervisor need not exec itself again to have it.
    home.use_metrics_dir(ctx.layout)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "services.supervisor"])  # noqa: S606


_RELAY_DB_HELP = "a SQLite database file, or a postgresql:// URL (default: $FELUND_RELAY_DB)"


def cmd_relay_migrate(args: argparse.Namespace) -> None:
    """Bring the relay database's schema to this version (idempotent; serve does it too)."""
    # Not at the top: every other command would load the database drivers.
    from felund.relay.server.backends import (  # noqa: PLC0415
        DB_ENV,
        database,
        describe,
        migrate,
    )

    db = database(args.db)
    if not db:
        raise SystemExit(f"felund relay migrate: --db or ${DB_ENV} is required")
    try:
        done = migrate(db)
    except (OSError, DatabaseUnavailable) as exc:
        raise SystemExit(f"felund relay migrate: {describe(db)}: {exc}") from None
    print(f"{describe(db)}: {done}")


def relay_serve(argv: list[str]) -> None:
    """``felund relay serve ARGS``: services.relay_server takes over this process with the
    arguments as given (its parser is the one: every flag, ``--help`` included)."""
    # The relay keeps its own in-memory metrics, never a node's multiprocess files.
    os.environ.pop(home.MULTIPROC_ENV, None)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "services.relay_server", *argv])  # noqa: S606


def cmd_ui(args: argparse.Namespace) -> None:
    """Attach the curses ui to the running node (services.ui takes over this process)."""
    # The ui finds the node itself, and says in one line why it cannot attach.
    argv = [sys.executable, "-m", "services.ui", *(["--start"] if args.start else [])]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # noqa: S606


def cmd_invite(args: argparse.Namespace, node: NodeClient) -> None:
    """Create a circle and print its invite code, or print an existing circle's code."""
    if args.circle_id:
        answer = node.call(OP_INVITE, {"circle_id": args.circle_id})
    else:
        answer = node.call(OP_CIRCLE_CREATE, {"name": args.name or ""})
        err(f"created circle {answer['circle_id']}")
    peer = invite.decode_invite(answer["code"]).peer
    if invite.is_tcp_peer(peer):
        err(netaddr.reach_note(peer))
    if answer.get("epoch"):
        err(
            f"a code of the circle's key since its last removal (epoch {answer['epoch']}): "
            "the codes before it admit nobody; the other felund implementation cannot use it"
        )
    if args.json:
        json_out({"circle_id": answer["circle_id"], "code": answer["code"]})
    else:
        out(answer["code"])


def cmd_join(args: argparse.Namespace, node: NodeClient) -> None:
    """Join a circle by invite code."""
    answer = node.call(OP_CIRCLE_JOIN, {"code": args.code.strip(), "name": args.name or ""})
    out(answer["circle_id"])
    err("joined" if answer["joined"] else "already a member of this circle")
    if answer.get("relay_url"):
        err(
            f"the circle lives at the relay {answer['relay_url']}: this node now syncs "
            "through it (`felund relay url` shows or changes that)"
        )


def cmd_circles(args: argparse.Namespace, node: NodeClient) -> None:
    """List this node's circles."""
    circles = node.call(OP_CIRCLES, {})["circles"]
    if args.json:
        json_out(circles)
        return
    if not circles:
        err("no circles yet: create one with `felund invite` or join with `felund join --code`")
    for c in circles:
        out(f"{c['circle_id']}  {c['name']}")


def cmd_send(args: argparse.Namespace, node: NodeClient) -> None:
    """Post one message, or one per line of stdin."""
    node_id = home.load_node_id(context().layout)
    if args.stdin and args.text is not None:
        raise UsageError("give the message TEXT or --stdin, not both")
    if not args.stdin and args.text is None:
        raise UsageError("give the message TEXT, or --stdin to send one message per line")
    if args.text is not None and not args.text.strip():
        raise UsageError("the message is empty")
    lines = _stdin_lines() if args.stdin else iter([args.text])
    sent = new = 0
    for batch in _batches(lines, MAX_POST_BATCH):
        now = int(time.time())
        msgs = [
            {"msg_id": m, "created_ts": now, "text": t}
            for m, t in zip(ids.new_msg_ids(node_id, now, len(batch)), batch, strict=True)
        ]
        try:
            answer = node.call(
                OP_POST, {"circle_id": args.circle_id, "channel_id": args.channel, "msgs": msgs}
            )
        except RPCTimeout:
            err(f"felund: {sent} messages were stored before the node stopped answering")
            raise
        sent += len(msgs)
        new += answer["stored"]
    if args.stdin:
        err(f"sent {sent} messages")


def _stdin_lines() -> Iterator[str]:
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise UsageError(f"line {number} is not UTF-8 text") from None
        if not text.strip():
            continue
        try:
            wire.check_text(text)
        except InvalidMessage as exc:
            raise UsageError(f"line {number}: {exc.detail}") from None
        yield text


def _batches(items: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def cmd_inbox(args: argparse.Namespace, node: NodeClient) -> None:
    """Show the newest messages of a circle."""
    msgs = node.call(
        OP_INBOX,
        {"circle_id": args.circle_id, "channel_id": args.channel or "", "limit": args.limit},
    )["msgs"]
    if args.json:
        json_out(
            [
                {
                    k: m[k]
                    for k in (
                        "msg_id",
                        "channel_id",
                        "author_node_id",
                        "display_name",
                        "created_ts",
                        "text",
                        "store_seq",
                        "blocked",
                        "verified",
                    )
                }
                for m in msgs
            ]
        )
        return
    for m in msgs:
        if m["blocked"]:
            continue  # blocked here (felund block): a reader's screen never shows it
        out(message_line(m))


def cmd_peers(args: argparse.Namespace, node: NodeClient) -> None:
    """List known peer addresses."""
    peers: list[dict[str, Any]] = []
    page = node.call(OP_PEERS, {})
    peers.extend(page["peers"])
    while page.get("more") and page["peers"]:  # the store answers a page at a time
        page = node.call(OP_PEERS, {"after": [peers[-1]["circle_id"], peers[-1]["addr"]]})
        peers.extend(page["peers"])
    if args.json:
        json_out(peers)
        return
    if not peers:
        err("no peers known yet")
    for p in peers:
        seen = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(p["last_seen"]))
            if p["last_seen"]
            else "never"
        )
        out(f"{p['circle_id']}  {p['addr']}  {p['node_id'] or '-'}  last seen {seen}")


# What the supervisor's states are called on screen.
_STATE_WORDS = {"backoff": "restarting", "failed": "given up"}
STATUS_TRY_MS = 1000  # status asks a store that serves once, briefly; else it reads the file


def cmd_status(args: argparse.Namespace, node: NodeClient) -> None:
    """What the node is, holds and runs: the supervisor's view, never a wait on a child
    it knows is down."""
    status = status_of(node, context())
    if args.json:
        json_out(status)
        return
    if not node.online:
        state = "stopped"
    elif status["supervisor_pid"]:
        state = f"running, supervisor pid {status['supervisor_pid']}"
    else:
        state = "running, but its supervisor does not answer"
    out(f"node      {status['node_id']} ({state})")
    out(f"home      {status['home']}")
    if status["metrics_url"]:
        out(f"metrics   {status['metrics_url']}")
    if status["gossip_addr"]:
        out(f"gossip    {status['gossip_addr']}")
    if status["relay_url"]:
        out(f"relay     {status['relay_url']}")
    messages = status["messages"]
    out(f"messages  {messages if messages is not None else 'unknown'}")
    out(f"circles   {len(status['circles'])}")
    for c in status["circles"]:
        lines = [_gossip_line(c["gossip"])] if "gossip" in c else []
        lines += [_relay_line(c["relay"])] if "relay" in c else []
        if lines:
            out(f"  {c['name'] or c['circle_id'][:12]:<20} {'; '.join(lines)}")
    now = time.time()
    for name, s in status["services"].items():
        word = _STATE_WORDS.get(s["state"], s["state"])
        line = f"  {name:<12} {word:<10} pid {s['pid'] or '-':<8} restarts {s['restarts']:<3}"
        if s["since"]:
            line += f" since {_clock(s['since'])}"
        if s["next_start"]:
            wait = max(0.0, s["next_start"] - now)
            line += f", next try {_clock(s['next_start'])} (in {_duration(wait)})"
        if s["state"] != "running" and s["reason"]:
            line += f"; {s['reason']}"
        out(line)


def status_of(node: NodeClient, ctx: Context) -> dict[str, Any]:
    """What ``felund status --json`` prints (tests read it in-process, over the bus)."""
    sup = _supervisor(node)
    services: dict[str, Any] = sup["services"] if sup else {}
    serving = services.get(SVC_STORE, {}).get("state") == "running"
    circles, messages = _holdings(node, ctx, ask_store=not node.online or serving or not sup)
    reports = sup.get("connectivity", {}) if sup else {}
    for c in circles:
        # Only what a running child reported: a stopped relay-sync says nothing, not "fine".
        for key, service in (("gossip", SVC_GOSSIP), ("relay", SVC_RELAY_SYNC)):
            report = reports.get(service, {}).get(c["circle_id"])
            if isinstance(report, dict):
                c[key] = report
    status: dict[str, Any] = {
        "node_id": ctx.node_id,
        "home": str(ctx.layout.home),
        "running": node.online,
        "supervisor_pid": sup["pid"] if sup else None,
        "metrics_url": sup["metrics_url"] if sup else "",
        "gossip_addr": sup["gossip_addr"] if sup else "",
        "relay_url": (sup.get("relay_url") if sup else None) or "",
        "circles": circles,
        "messages": messages,
        "services": {n: {k: s.get(k) for k in _SERVICE_KEYS} for n, s in services.items()},
    }
    return status


def _gossip_line(g: dict[str, Any]) -> str:
    """One circle's gossip connectivity, as gossip's heartbeat reports it."""
    peers = g.get("peers")
    line = f"gossip {peers} peer{'' if peers == 1 else 's'} connected"
    if g.get("last_message_ts"):
        line += f", last message {_clock(g['last_message_ts'])}"
    return line


def _relay_line(r: dict[str, Any]) -> str:
    """One circle's relay connectivity, as relay-sync's heartbeat reports it."""
    if r.get("reachable"):
        line = "relay reachable" + (", feed up" if r.get("feed") else "")
    else:
        since = r.get("error_since")
        line = "relay unreachable" + (f" since {_clock(since)}" if since else "")
        if r.get("last_error"):
            line += f": {str(r['last_error'])[:120]}"
    if r.get("last_message_ts"):
        line += f"; last message {_clock(r['last_message_ts'])}"
    if r.get("history_expired_ts"):
        line += (
            f"; at {_clock(r['history_expired_ts'])} the relay had removed messages (its "
            "retention) before this node read them: only gossip peers may still hold them"
        )
    return line


_SERVICE_KEYS = ("pid", "state", "since", "restarts", "last_exit", "reason", "next_start")


def _supervisor(node: NodeClient) -> dict[str, Any] | None:
    """The supervisor's status; None if the node is stopped or its supervisor is mute."""
    try:
        return node.supervisor_status()
    except RPCTimeout:
        return None


def _holdings(node: NodeClient, ctx: Context, ask_store: bool) -> tuple[list[Any], int | None]:
    """Circles and message count: from the store if it serves, else from the file."""
    if ask_store:
        try:
            circles = node.call(OP_CIRCLES, {}, STATUS_TRY_MS, 0)["circles"]
            stats = node.call(OP_STATS, {}, STATUS_TRY_MS, 0)
            return [{k: c[k] for k in ("circle_id", "name")} for c in circles], stats["messages"]
        except RPCTimeout:
            pass
        except RPCError as exc:
            if exc.code != ERR_DISK_FULL:
                raise
            # A full disk fails the store's batches, reads included; the file still reads.
            err(f"felund: {exc.message}")
    # The store is down or given up; WAL lets us read beside any writer.
    try:
        db = database.Database(ctx.layout.database, ctx.config.store.synchronous)
    except (sqlite3.Error, DiskFull):
        return [], None
    try:
        circles = [{"circle_id": c.circle_id, "name": c.name} for c in db.circles()]
        return circles, db.message_count()
    except sqlite3.Error:
        return [], None
    finally:
        db.close()


def _clock(unix: float) -> str:
    """A moment as local time: the time of day, with the date unless it is today."""
    moment = time.localtime(unix)
    today = time.localtime()[:3] == moment[:3]
    return time.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M:%S", moment)


def _duration(seconds: float) -> str:
    """``4m 05s``, ``12s``, ``1h 03m``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def cmd_stop(args: argparse.Namespace) -> None:
    """Stop the running node cleanly (SIGTERM to its supervisor) and wait until it is gone."""
    ctx = context()
    lock = home.NodeLock(ctx.layout)
    running = find_running(ctx, lock)
    if running is None:
        lock.release()
        err(f"no node is running in {ctx.layout.home}")
        return
    node = BusNode(running)
    try:
        pid = int(node.supervisor_status()["pid"])
    except RPCTimeout:
        holder, _ = lock.holder()
        raise FelundError(
            f"the node in {ctx.layout.home} does not answer"
            + (f" (pid {holder} holds its lock)" if holder else "")
            + "; it was not stopped"
        ) from None
    finally:
        node.close()
    try:
        # A handle on the process itself: the signal and the wait cannot reach
        # another process that got its pid after it.
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        err("stopped")
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGTERM)
        err(f"stopping the node (pid {pid})")
        if not select.select([fd], [], [], args.timeout)[0]:
            raise FelundError(f"the node (pid {pid}) did not stop within {args.timeout:g} s")
    except ProcessLookupError:
        pass  # it ended between the two calls
    finally:
        os.close(fd)
    err("stopped")


def cmd_relay_url(args: argparse.Namespace, node: NodeClient) -> None:
    """Show the relay this node uses, or set it (``--off``: none); a running node follows."""
    if args.off and args.url is not None:
        raise UsageError("give a URL or --off, not both")
    body = {} if args.url is None and not args.off else {"relay_url": (args.url or "").strip()}
    url = node.call(OP_SETTINGS, body)["relay_url"]
    if args.json:
        json_out({"relay_url": url})
    elif url:
        out(url)
    if body and not args.json:
        err("relay set" if url else "relay off")
    elif not url and not args.json:
        err("no relay: set one with `felund relay url URL`")


def cmd_config(args: argparse.Namespace) -> None:
    """Validate or show the effective config."""
    cfg = config_mod.load(home.home_from_env())
    if args.action == "check":
        out("config ok")
        return
    ctx = context()
    if ctx.layout.database.exists():
        # `felund rename` and `felund relay url` are runtime settings, kept by the store.
        with open_node(ctx) as node:
            now = node.call(OP_SETTINGS, {})
        cfg = cfg._replace(
            node=cfg.node._replace(name=now["display_name"]),
            relay=cfg.relay._replace(url=now["relay_url"]),
        )
        out("# node.name and relay.url as the node uses them (felund rename, felund relay url)")
    out(config_mod.render(cfg))


# --- plumbing -----------------------------------------------------------------
def _limit(value: str) -> int:
    return _whole(value, 1, 100_000)


def _whole(value: str, low: int, high: int) -> int:
    """A whole number from ``low`` to ``high``, or the one error that says so."""
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}: {value!r}")
    return number


_CHECK_WIDTH = 78  # the formatters that only check arguments: a plain terminal's


class _Help(argparse.HelpFormatter):
    """Help that names every option's default (when it has one worth naming)."""

    def __init__(self, prog: str, width: int | None = None) -> None:
        # argparse makes a formatter for each argument added, to check it, and the default
        # width asks shutil, which loads bz2 and lzma: only help text asks (``format_help``).
        super().__init__(prog, width=width or _CHECK_WIDTH)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        default = action.default
        if text and "%(default)" not in text and default not in (None, False, argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake reported in one line rather than a usage screen."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        _fail(EXIT_USAGE, f"{message} (see `{self.prog} --help`)")

    def format_help(self) -> str:
        """The help text, wrapped at the terminal's width."""
        import shutil  # noqa: PLC0415 - only help wraps at the terminal's width

        width = shutil.get_terminal_size().columns - 2  # what argparse's default takes
        self.formatter_class = functools.partial(_Help, width=width)
        return super().format_help()


class _Unbuilt:
    """A subcommand's parser while another command runs: whatever is added to it, is not."""

    def __getattr__(self, name: str) -> Callable[..., _Unbuilt]:
        return lambda *args, **kwargs: self


class _OneCommand:
    """The main parser's subcommands, of which only ``command``'s parser is built."""

    def __init__(self, sub: Any, command: str) -> None:
        self._sub, self._command, self.built = sub, command, False

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        """The parser of ``name`` if it is the command that runs, else an unbuilt one."""
        if name != self._command:
            return _Unbuilt()
        self.built = True
        return self._sub.add_parser(name, **kwargs)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of every subcommand, or of ``command``'s alone if there is one
    of that name: a command's start builds one parser, not forty."""
    parser = _Parser(
        prog="felund", description="felund node: peer-to-peer group chat for small private circles"
    )
    parser.add_argument("--version", action="version", version=f"felund {__version__}")
    sub: Any = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command is not None:
        sub = _OneCommand(sub, command)

    p = sub.add_parser("init", help="create this node's home and config")
    p.add_argument("--bind", help="address to accept peers on (default: 0.0.0.0)")
    p.add_argument("--port", type=int, help="TCP port for peers (default: 9999)")
    p.add_argument("--name", help="your display name (default: none; peers see your node id)")
    p.set_defaults(func=cmd_init, offline=True)

    p = sub.add_parser("run", help="run the node in the foreground (headless)")
    p.set_defaults(func=cmd_run, offline=True)

    p = sub.add_parser("stop", help="stop the running node and wait until it is gone")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for it to stop")
    p.set_defaults(func=cmd_stop, offline=True)

    p = sub.add_parser("ui", help="attach the chat screen to the running node (Ctrl+Q detaches)")
    p.add_argument("--start", action="store_true", help="start the node first if it is stopped")
    p.set_defaults(func=cmd_ui, offline=True)

    p = sub.add_parser("invite", help="create a circle and print its invite code")
    p.add_argument("--circle-id", help="print the code of a circle this node is in instead")
    p.add_argument("--name", help="a name for the new circle (default: none)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_invite)

    p = sub.add_parser("join", help="join a circle with an invite code")
    p.add_argument("--code", required=True, help="the invite code (felund1.…)")
    p.add_argument("--name", help="a name for the circle on this node (default: none)")
    p.set_defaults(func=cmd_join)

    p = sub.add_parser("circles", help="list circles")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_circles)

    p = sub.add_parser("send", help="post a message (or one per line of stdin)")
    p.add_argument("--circle-id", required=True, help=CIRCLE_HELP)
    p.add_argument("--channel", type=channel_arg, default=DEFAULT_CHANNEL, help="the channel")
    p.add_argument("--stdin", action="store_true", help="one message per input line")
    p.add_argument("text", nargs="?", help="the message (or --stdin)")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser(
        "inbox",
        help="show the newest messages",
        description=f"Show the newest messages of a circle; {UNVERIFIED_HELP}.",
    )
    p.add_argument("--circle-id", required=True, help=CIRCLE_HELP)
    p.add_argument("--channel", type=channel_arg, help="one channel only (default: all)")
    p.add_argument("--limit", type=_limit, default=50, help="how many messages, newest last")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_inbox)

    cli_chat.add_commands(sub, channel_arg)
    cli_data.add_commands(sub, channel_arg)
    cli_blocks.add_commands(sub)

    p = sub.add_parser("peers", help="list known peers")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_peers)

    p = sub.add_parser("status", help="show the node's state")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("relay", help="this node's relay URL, or run a relay server")
    relay = p.add_subparsers(dest="relay_command", required=True, metavar="COMMAND")
    # Only listed here: main() hands `relay serve ...` to the relay server's own parser.
    relay.add_parser("serve", help="serve the relay HTTP API in the foreground (--help: its flags)")
    p = relay.add_parser("migrate", help="create or migrate the relay's database schema")
    p.add_argument("--db", help=_RELAY_DB_HELP)
    p.set_defaults(func=cmd_relay_migrate, offline=True)
    p = relay.add_parser("url", help="show or set the relay this node uses (a runtime setting)")
    p.add_argument("url", nargs="?", help="an http(s) URL; it replaces relay.url of the config")
    p.add_argument("--off", action="store_true", help="use no relay")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_relay_url)

    p = sub.add_parser("config", help="check or show the effective configuration")
    p.add_argument("action", choices=("check", "show"), help="check it, or show it as TOML")
    p.set_defaults(func=cmd_config, offline=True)
    if isinstance(sub, _OneCommand) and not sub.built:
        return build_parser()  # no such command: the whole parser says which there are
    return parser


def _fail(code: int, text: str) -> NoReturn:
    err(f"felund: {text}")
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``felund`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["relay", "serve"]:
        relay_serve(argv[2:])
    args = build_parser(argv[0] if argv and not argv[0].startswith("-") else None).parse_args(argv)
    func: Callable[..., None] = args.func
    try:
        if getattr(args, "offline", False):
            func(args)
            return
        with open_node(context()) as node:
            func(args, node)
    except (UsageError, ConfigError) as exc:
        _fail(EXIT_USAGE, str(exc))
    except RPCError as exc:
        unavailable = exc.code in (ERR_INTERNAL, ERR_DISK_FULL)
        _fail(EXIT_UNAVAILABLE if unavailable else EXIT_USAGE, exc.message)
    except ServiceDown as exc:
        _fail(EXIT_UNAVAILABLE, str(exc))
    except RPCTimeout:
        _fail(EXIT_UNAVAILABLE, "the node is running but not answering; see `felund status`")
    except FelundError as exc:
        _fail(EXIT_UNAVAILABLE, str(exc))
    except sqlite3.Error as exc:
        _fail(EXIT_UNAVAILABLE, f"database {context().layout.database}: {exc}")
    except KeyboardInterrupt:
        _fail(130, "interrupted")
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`); nothing to say
        raise SystemExit(0) from None
