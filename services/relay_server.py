"""The relay server process: ``python -m services.relay_server`` (``felund relay serve``).

A separate deployable, not part of a node: no bus, no supervisor, no node
home. It serves the relay HTTP API of the wire spec (``felund.relay.server.app``)
and its own ``/metrics`` on one port.

- Owns: the database given by ``--db`` (or ``FELUND_RELAY_DB``): a SQLite
  file (created 0600 if missing), or a ``postgresql://`` URL that several
  instances may share (``felund.relay.server.backends``); the schema is
  migrated at start (``felund relay migrate`` does it alone).
- Serves: ``/v1/...``, ``/metrics`` and the browser client at ``/`` (not
  with ``--no-web``) on ``--host``/``--port``; put a TLS
  reverse proxy in front for the internet (deploy/README.md), and name it
  with ``--trusted-proxy``: the client address is then taken from its
  ``X-Real-IP`` (or the last ``X-Forwarded-For`` hop not a trusted proxy).
- Budgets (``felund.relay.server.limits``): requests, messages and bytes a
  second, per signing key for signed calls (``--key-requests``,
  ``--key-messages``, ``--key-bytes``) and per client address for the others
  (``--address-...``), signatures that do not verify per address
  (``--unverified``), the web app's files per address (``--web-files``);
  ``--no-limits`` turns them all off. The client address
  is the TCP peer's unless the peer is a ``--trusted-proxy``.
- Configuration: every argument but ``--db`` is also a key of the TOML file
  given by ``--config`` (or ``$FELUND_RELAY_CONFIG``; config/relay.toml has
  each with its default), named as the flag with ``_`` for ``-``; a flag on
  the command line wins over the file (a repeatable one adds to its list).
  Every limit is shown in the ``relay.starting`` line.
- Bounds (``--max-connections``, ``--header-timeout``, ``--body-timeout``,
  ``--send-timeout``, ``--ws-queue-bytes``, ``--send-budget-bytes``): what a
  client that sends or reads slowly, or not at all, can hold. The connection
  cap is lowered to what the open-files limit leaves room for, and shown in
  the ``relay.starting`` line.
- ICE servers (``--ice-server``, ``--ice-username``, ``--ice-credential``):
  the STUN/TURN servers served to pages at ``/v1/ice``, checked at start (a
  bad one exits 2 with what is wrong); none by default.
- Logs: structlog JSON lines under a service manager (``FELUND_LOG_FORMAT``,
  ``FELUND_LOG_LEVEL``), one per request; aiohttp's own records (a malformed
  request) one line each too (``felund.relay.server.aiolog``).
- Stops on SIGTERM or SIGINT: closes the feeds (1001), finishes requests
  in flight, exits 0. A restart loses nothing acknowledged: every answer
  comes after its commit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import os
import resource
import signal
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from felund import logs
from felund.errors import DatabaseUnavailable, StoreInUse
from felund.home import MULTIPROC_ENV
from felund.relay.protocol import MAX_BODY_BYTES, WS_PING_S
from felund.relay.server import aiolog
from felund.relay.server import metrics as m
from felund.relay.server.app import make_app
from felund.relay.server.backends import DB_ENV, database, describe, open_store
from felund.relay.server.connections import CappedSite, usable_connections
from felund.relay.server.ice import ice_servers
from felund.relay.server.limits import NO_BUDGET, OFF, UNITS, Budget, Rate
from felund.relay.server.state import RELAY, Relay, RelayConfig

SERVICE = "relay"
SHUTDOWN_TIMEOUT_S = 10.0
DAY_S = 86_400
_DEFAULTS = RelayConfig()
ICE_CREDENTIAL_ENV = "FELUND_ICE_CREDENTIAL"
CONFIG_ENV = "FELUND_RELAY_CONFIG"
_NOT_IN_CONFIG = frozenset({"help", "config", "db"})


def _rate(value: str) -> Rate:
    try:
        return Rate.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return number


def _seconds(value: str) -> float:
    number = _positive_float(value)
    if number == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return number


def _days(value: str) -> float:
    number = _positive_float(value)
    if number * DAY_S < 1:
        raise argparse.ArgumentTypeError("must be at least one second (0.0000116 days)")
    return number


def _count(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError("must be between 0 and 65535 (0: any free port)")
    return number


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the relay server."""
    p = argparse.ArgumentParser(
        prog="felund relay serve", description="Serve the felund relay / rendezvous HTTP API."
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="TCP port (8080)")
    p.add_argument(
        "--db",
        help="a SQLite database file, or a postgresql:// URL (default: $FELUND_RELAY_DB)",
    )
    p.add_argument(
        "--require-signatures",
        action="store_true",
        help="refuse unsigned message, signalling and feed calls (the existing browser "
        "client sends them unsigned)",
    )
    p.add_argument(
        "--no-web",
        action="store_true",
        help="do not serve the browser client at / (only the API and /metrics)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=os.environ.get(CONFIG_ENV),
        help=f"a TOML file of these arguments' values (or ${CONFIG_ENV}): the flag's name "
        'with _ for -, e.g. key_messages = "50000/200000"; a flag given here wins',
    )
    for payer, budget, who in (
        ("key", _DEFAULTS.per_key, "signing key, for a signed request that verifies"),
        ("address", _DEFAULTS.per_address, "client address, for any other request"),
    ):
        for unit in UNITS:
            p.add_argument(
                f"--{payer}-{unit}",
                type=_rate,
                default=getattr(budget, unit),
                metavar="RATE[/BURST]",
                help=f"{unit}{' (of request bodies)' if unit == 'bytes' else ''} a second per "
                f"{who}, and how many at once (%(default)s; 0: no limit)",
            )
    p.add_argument(
        "--unverified",
        type=_rate,
        default=_DEFAULTS.unverified,
        metavar="RATE[/BURST]",
        help="requests a second per client address whose signature does not verify "
        "(%(default)s; 0: no limit)",
    )
    p.add_argument(
        "--web-files",
        type=_rate,
        default=_DEFAULTS.web_files,
        metavar="RATE[/BURST]",
        help="requests a second per client address for the web app's files, apart from "
        "its API budget (%(default)s; 0: no limit)",
    )
    p.add_argument(
        "--no-limits",
        action="store_true",
        help="no budget at all (--key-*, --address-*, --unverified, --web-files): for benches",
    )
    p.add_argument(
        "--trusted-proxy",
        action="append",
        type=_network,
        default=[],
        metavar="CIDR",
        help="a reverse proxy (address or network) whose X-Real-IP / X-Forwarded-For names "
        "the client; repeatable; none by default (every client is its TCP peer)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=_count,
        default=MAX_BODY_BYTES,
        help="largest request body (%(default)s)",
    )
    p.add_argument(
        "--ws-ping-interval",
        type=_positive_float,
        default=WS_PING_S,
        help="seconds between PINGs on the WebSocket feed (%(default)s)",
    )
    p.add_argument(
        "--max-connections",
        type=_count,
        default=_DEFAULTS.max_connections,
        help="open connections at once (%(default)s, lowered to what the open-files limit "
        "allows); at the cap a new one closes the oldest still sending its request, or gets 503",
    )
    p.add_argument(
        "--header-timeout",
        type=_seconds,
        default=_DEFAULTS.header_timeout_s,
        help="seconds a connection has to send a request's headers; also the idle "
        "keep-alive time (%(default)s)",
    )
    p.add_argument(
        "--body-timeout",
        type=_seconds,
        default=_DEFAULTS.body_timeout_s,
        help="seconds a client has to send a request's body (%(default)s)",
    )
    p.add_argument(
        "--send-timeout",
        type=_seconds,
        default=_DEFAULTS.send_timeout_s,
        help="seconds a feed client may take nothing we send before it is dropped (%(default)s)",
    )
    p.add_argument(
        "--ws-queue-bytes",
        type=_count,
        default=_DEFAULTS.ws_queue_bytes,
        help="bytes one feed client may fall behind before it is closed (%(default)s)",
    )
    p.add_argument(
        "--send-budget-bytes",
        type=_count,
        default=_DEFAULTS.send_budget_bytes,
        help="bytes queued for all clients together: feed frames and GET answers (%(default)s)",
    )
    p.add_argument(
        "--retention-days",
        type=_days,
        default=_DEFAULTS.retention_s / DAY_S,
        metavar="DAYS",
        help="how long messages are kept, and signing keys and realms unused (%(default)g, "
        "as the other relay keeps them); a page asked from before what was removed says "
        '"expired": true',
    )
    p.add_argument(
        "--purge-interval",
        type=_seconds,
        default=_DEFAULTS.purge_interval_s,
        metavar="S",
        help="seconds between two passes of the retention, each in small batches (%(default)g)",
    )
    p.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        help="a STUN or TURN server the browsers' calls use (stun:, stuns:, turn:, turns: "
        "HOST[:PORT]), served at /v1/ice; repeatable; none by default",
    )
    p.add_argument("--ice-username", default="", metavar="U", help="the TURN servers' user name")
    p.add_argument(
        "--ice-credential",
        default=os.environ.get(ICE_CREDENTIAL_ENV, ""),
        metavar="C",
        help=f"the TURN servers' password (or ${ICE_CREDENTIAL_ENV}, kept out of the "
        "process list); served to every page, never logged",
    )
    p.add_argument(
        "--log-level",
        default=os.environ.get("FELUND_LOG_LEVEL", "info"),
        choices=("debug", "info", "warning", "error"),
    )
    p.add_argument(
        "--log-format",
        default=os.environ.get("FELUND_LOG_FORMAT", "auto"),
        choices=("auto", "json", "console"),
    )
    return p


def _from_config(parser: argparse.ArgumentParser, path: Path) -> dict[str, Any]:
    """The arguments' values a TOML file sets, checked as the flags' are."""
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        parser.error(f"--config {path}: {exc}")
    actions = {a.dest: a for a in parser._actions if a.dest not in _NOT_IN_CONFIG}
    values: dict[str, Any] = {}
    for name, value in table.items():
        action = actions.get(name)
        if action is None:
            parser.error(f"--config {path}: no such key {name!r}")
        values[name] = _config_value(parser, action, name, value)
    return values


def _config_value(
    parser: argparse.ArgumentParser, action: argparse.Action, name: str, value: Any
) -> Any:
    if action.nargs == 0:  # a switch
        if not isinstance(value, bool):
            parser.error(f"--config: {name} is true or false")
        return value
    many = isinstance(action, argparse._AppendAction)
    items = value if many and isinstance(value, list) else [value]
    if any(isinstance(v, (dict, list, bool)) for v in items):
        parser.error(f"--config: {name} is {'a list of values' if many else 'one value'}")
    convert = action.type if callable(action.type) else str
    try:
        converted = [convert(str(v)) for v in items]
    except (argparse.ArgumentTypeError, ValueError) as exc:
        parser.error(f"--config: {name}: {exc}")
    if action.choices is not None and any(v not in action.choices for v in converted):
        parser.error(f"--config: {name}: one of {', '.join(map(str, action.choices))}")
    return converted if many else converted[0]


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The arguments: the flags, over the ``--config`` file's values, over the defaults."""
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.config is not None:
        parser.set_defaults(**_from_config(parser, first.config))
    return parser.parse_args(argv)


def limits_of(args: argparse.Namespace) -> dict[str, Any]:
    """The budgets the arguments set, as ``RelayConfig`` fields."""
    if args.no_limits:
        return {
            "per_key": NO_BUDGET,
            "per_address": NO_BUDGET,
            "unverified": OFF,
            "web_files": OFF,
        }
    return {
        "per_key": Budget(args.key_requests, args.key_messages, args.key_bytes),
        "per_address": Budget(args.address_requests, args.address_messages, args.address_bytes),
        "unverified": args.unverified,
        "web_files": args.web_files,
    }


async def serve(
    app: web.Application, host: str, port: int, log: structlog.stdlib.BoundLogger
) -> int:
    """Serve until SIGTERM or SIGINT; the exit status."""
    relay = app[RELAY]
    config = relay.config
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        # aiohttp closes a connection still waiting for a whole request this
        # long after it opened or answered: the header timeout.
        keepalive_timeout=config.header_timeout_s,
    )
    await runner.setup()
    try:
        site = CappedSite(runner, host, port, config.max_connections, relay.arrivals)
        try:
            await site.start()
        except OSError as exc:
            log.error("relay.listen_failed", host=host, port=port, error=str(exc))
            return 1
        bound = runner.addresses[0] if runner.addresses else (host, port)
        log.info("relay.ready", host=str(bound[0]), port=int(bound[1]))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("relay.stopping")
    finally:
        await runner.cleanup()
    return 0


GC_THRESHOLD = 10_000  # container allocations between two collections of the youngest


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m services.relay_server --db PATH ...``."""
    if os.environ.pop(MULTIPROC_ENV, None) is not None:
        # prometheus-client chose file-backed values when it was imported: the
        # relay keeps its own in-memory registry, so start again without it.
        os.execv(sys.executable, [sys.executable, "-m", "services.relay_server", *sys.argv[1:]])  # noqa: S606
    args = parse_arguments(argv)
    try:
        ice = ice_servers(args.ice_server, args.ice_username, args.ice_credential)
    except ValueError as exc:
        build_parser().error(str(exc))
    log = logs.setup(SERVICE, "", args.log_level, args.log_format)
    aiolog.install(log)
    config = RelayConfig(
        require_signatures=args.require_signatures,
        **limits_of(args),
        trusted_proxies=tuple(args.trusted_proxy),
        max_body_bytes=args.max_body_bytes,
        ws_ping_s=args.ws_ping_interval or WS_PING_S,
        serve_web=not args.no_web,
        max_connections=usable_connections(args.max_connections),
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        send_timeout_s=args.send_timeout,
        ws_queue_bytes=args.ws_queue_bytes,
        send_budget_bytes=args.send_budget_bytes,
        ice_servers=ice,
        retention_s=round(args.retention_days * DAY_S),
        purge_interval_s=args.purge_interval,
    )
    db = database(args.db)
    if not db:
        build_parser().error(f"--db or ${DB_ENV} is required")
    try:
        threaded = open_store(db)
    except (OSError, StoreInUse, DatabaseUnavailable) as exc:
        log.error("relay.open_failed", database=describe(db), error=str(exc))
        raise SystemExit(1) from None
    m.START_TIME.set(time.time())
    log.info(
        "relay.starting",
        database=describe(db),
        require_signatures=config.require_signatures,
        config_file=str(args.config or ""),
        serve_web=config.serve_web,
        per_key=config.per_key.describe(),
        per_address=config.per_address.describe(),
        unverified=str(config.unverified),
        web_files=str(config.web_files),
        trusted_proxies=[str(n) for n in config.trusted_proxies],
        max_body_bytes=config.max_body_bytes,
        max_connections=config.max_connections,
        open_files=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        ws_per_client=config.ws_per_client,
        ws_total=config.ws_total,
        ws_queue_bytes=config.ws_queue_bytes,
        send_budget_bytes=config.send_budget_bytes,
        header_timeout_s=config.header_timeout_s,
        body_timeout_s=config.body_timeout_s,
        send_timeout_s=config.send_timeout_s,
        retention_s=config.retention_s,
        purge_interval_s=config.purge_interval_s,
        ice_servers=[url for server in ice for url in server.urls],  # never the credential
    )
    if config.max_connections < args.max_connections:
        log.warning(
            "relay.connections_lowered",
            wanted=args.max_connections,
            max_connections=config.max_connections,
            hint="raise LimitNOFILE (systemd) or ulimit -n",
        )
    # A POST of 50 messages makes a thousand objects that die with it: at the default
    # threshold (700) the collector ran several times a request, scanning the requests
    # in flight, and its full passes every object start-up made (5 % of the relay's
    # CPU at 50 messages a POST). Those are frozen; the young ones are left to die.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    try:
        code = asyncio.run(serve(make_app(Relay(config, threaded, log)), args.host, args.port, log))
    finally:
        threaded.close()
    log.info("relay.stopped", code=code)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
