"""Configuration: one TOML file read into NamedTuples.

Lookup order, later wins: the defaults below (documented key by key in
``config/felund.toml``), ``$FELUND_HOME/felund.toml``, then environment
variables ``FELUND_<SECTION>_<KEY>``. Unknown sections or keys are errors,
in the file and in the environment alike, so a typo never goes unnoticed.

NamedTuples, immutable as frozen dataclasses were: every process and every
command loads this, and dataclasses loads inspect and execs the methods of
each class, three times a NamedTuple's cost (issue 20: the command's start).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from felund import lazy
from felund.errors import ConfigError
from felund.files import write_private

if TYPE_CHECKING:
    import tomllib
else:  # a command whose config is unchanged never imports it (``_parsed``)
    tomllib = lazy.module("tomllib")

CONFIG_FILE_NAME = "felund.toml"
API_BASE_ENV = "FELUND_API_BASE"
MAX_RELAY_URL = 512  # characters; a relay's base URL is short, and it travels in every heartbeat


class NodeConfig(NamedTuple):
    """Who this node is to the people it chats with."""

    name: str = ""
    encrypt_messages: bool = True


class GossipConfig(NamedTuple):
    """Where peers reach this node over TCP."""

    bind: str = "0.0.0.0"  # noqa: S104 - a home server is meant to be reachable by its peers
    port: int = 9999
    advertise_host: str = ""
    round_interval_s: float = 5.0
    anti_entropy_interval_s: float = 30.0
    max_connections: int = 256
    max_connections_per_ip: int = 8
    offer_native: bool = True
    anchor: bool = True
    anchor_announce_interval_s: float = 3600.0


class RelayConfig(NamedTuple):
    """The relay this node meets others at (none by default)."""

    url: str = ""
    register_interval_s: float = 60.0
    poll_interval_s: float = 5.0


class MetricsConfig(NamedTuple):
    """The node's Prometheus endpoint."""

    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = 9464


class StoreConfig(NamedTuple):
    """The SQLite database and how writes are grouped."""

    path: str = "felund.db"
    synchronous: str = "full"
    batch_max_messages: int = 5000
    retain_days: int = 0  # prune messages older than this many days; 0 keeps them all


class BusConfig(NamedTuple):
    """The ZeroMQ bus between the node's processes."""

    runtime_dir: str = ""
    hwm: int = 100_000
    rpc_timeout_ms: int = 3000
    rpc_retries: int = 5


class SupervisorConfig(NamedTuple):
    """How children are watched and restarted."""

    heartbeat_interval_s: float = 1.0
    heartbeat_misses: int = 3
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 32.0
    healthy_after_s: float = 30.0
    flap_window_s: float = 60.0
    flap_max_restarts: int = 5
    given_up_retry_s: float = 300.0
    stop_timeout_s: float = 5.0


class LogConfig(NamedTuple):
    """Log level and rendering."""

    level: str = "info"
    format: str = "auto"


class Config(NamedTuple):
    """The whole configuration of one node."""

    node: NodeConfig = NodeConfig()
    gossip: GossipConfig = GossipConfig()
    relay: RelayConfig = RelayConfig()
    metrics: MetricsConfig = MetricsConfig()
    store: StoreConfig = StoreConfig()
    bus: BusConfig = BusConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    log: LogConfig = LogConfig()


_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("store", "synchronous"): ("normal", "full", "extra"),
    ("log", "level"): ("debug", "info", "warning", "error"),
    ("log", "format"): ("auto", "json", "console"),
}
_PORTS = {("gossip", "port"), ("metrics", "port")}  # 0 = pick a free port


def load(home: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read the config of the node at ``home``, applying environment overrides."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    path = home / CONFIG_FILE_NAME
    if path.exists():
        raw = _parsed(path)
    cfg = build(raw, env)
    if env.get(API_BASE_ENV) and not cfg.relay.url:
        # The other felund client's name for the relay; ours wins when both are set.
        cfg = cfg._replace(relay=cfg.relay._replace(url=env[API_BASE_ENV]))
        where = API_BASE_ENV
    else:
        where = "relay.url"
    problem = relay_url_problem(cfg.relay.url)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return cfg


def relay_url_problem(url: str) -> str:
    """What is wrong with a relay base URL, or "" when it is usable ("" itself means no relay).

    One check for the config file, the environment and the runtime setting
    (``store.settings``), so a URL the store accepted always starts relay-sync.
    """
    if not url:
        return ""
    if len(url) > MAX_RELAY_URL:
        return f"a relay URL is at most {MAX_RELAY_URL} characters"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "a relay URL holds no spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return f"{url[:80]!r} is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url[:80]!r} is not an http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        # It would travel on the bus and into logs: relays authenticate by signatures instead.
        return "a relay URL carries no user name or password"
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return "a relay URL is a base URL, without ?query or #fragment"
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        # Every client appends /v1/... itself: .../v1 would ask for /v1/v1/... and get 404s.
        base = urlunsplit(parts._replace(path=path.removesuffix("/v1")))
        return f"a relay URL names the base, without /v1 (felund adds it): use {base[:120]}"
    return ""


def _parsed(path: Path) -> dict[str, Any]:
    """The node's config file parsed, from the JSON copy beside it when that copy is of
    this very file (its inode, size and both times), else parsed and the copy renewed.

    Why: tomllib's import was a sixth of a command's start (README, architecture). The
    copy is only a cache: unreadable, stale or unwritable, the file is parsed."""
    st = path.stat()
    key = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    copy = path.with_name(f".{path.name}.parsed.json")
    try:
        cached = json.loads(copy.read_bytes())
        if cached["key"] == key and isinstance(cached["toml"], dict):
            return cached["toml"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    raw = parse_toml(path)
    with contextlib.suppress(OSError, TypeError, ValueError):  # TypeError: a TOML date
        write_private(copy, json.dumps({"key": key, "toml": raw}))
    return raw


def parse_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, as a ConfigError naming the file on failure."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def build(raw: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
    """Validate a parsed TOML document plus overrides into a Config."""
    sections: dict[str, Any] = {}
    section_types = _field_types(Config)
    for name in raw:
        if name not in section_types:
            raise ConfigError(f"unknown section [{name}]")
    for name, section_type in section_types.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table")
        sections[name] = _build_section(name, section_type, table, environ)
    return Config(**sections)


def _build_section(
    name: str, section_type: type, table: Mapping[str, Any], environ: Mapping[str, str]
) -> Any:
    types_ = _field_types(section_type)
    for key in table:
        if key not in types_:
            raise ConfigError(f"unknown key {name}.{key}")
    prefix = f"FELUND_{name.upper()}_"
    for var in environ:
        if var.startswith(prefix) and var[len(prefix) :].lower() not in types_:
            raise ConfigError(f"unknown override {var}: [{name}] has no such key")
    values: dict[str, Any] = {}
    for key, typ in types_.items():
        where = f"{name}.{key}"
        if (var := prefix + key.upper()) in environ:
            value: Any = _from_env(var, environ[var], typ)
        elif key in table:
            value = table[key]
        else:
            continue
        values[key] = _check(where, (name, key), value, typ)
    return section_type(**values)


def _field_types(cls: Any) -> dict[str, type]:
    """Each key's type: its default's (every key has one; a unit test holds them to the
    annotations, which ``from __future__ import annotations`` leaves as text)."""
    return {name: type(default) for name, default in cls._field_defaults.items()}


def _from_env(var: str, text: str, typ: type) -> Any:
    try:
        if typ is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if typ is int:
            return int(text)
        if typ is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"{var}={text!r} is not a valid {typ.__name__}") from None
    return text


def _check(where: str, key: tuple[str, str], value: Any, typ: type) -> Any:
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not typ:
        raise ConfigError(f"{where} must be a {typ.__name__}, not {type(value).__name__}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"{where} must be one of {', '.join(_CHOICES[key])}, not {value!r}")
    if key in _PORTS and isinstance(value, int) and not 0 <= value <= 65535:
        raise ConfigError(f"{where} must be a port number (0-65535), not {value}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number")
    if isinstance(value, int | float) and typ is not bool and value < 0:
        raise ConfigError(f"{where} must not be negative")
    return value


def render(config: Config) -> str:
    """The effective config as TOML (``felund config show``)."""
    lines: list[str] = []
    for name, section in config._asdict().items():
        lines.append(f"[{name}]")
        for key, value in section._asdict().items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(_toml_char(c) for c in value) + '"'
    return repr(value)


def _toml_char(c: str) -> str:
    # TOML basic strings may hold neither raw control characters nor DEL.
    if c in '"\\':
        return "\\" + c
    if ord(c) < 0x20 or ord(c) == 0x7F:
        return f"\\u{ord(c):04x}"
    return c
