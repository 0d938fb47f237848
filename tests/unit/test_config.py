"""The configuration: the documented file, validation, overrides and rendering."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from hypothesis import given
from hypothesis import strategies as st

from felund import config
from felund.errors import ConfigError

DOCUMENTED = Path(__file__).resolve().parents[2] / "config" / "felund.toml"


def documented() -> dict[str, Any]:
    return config.parse_toml(DOCUMENTED)


def section_fields() -> dict[str, set[str]]:
    """Every section of Config and the names of its fields."""
    return {name: set(section._fields) for name, section in config.Config()._asdict().items()}


def test_every_default_has_its_annotated_type() -> None:
    """A key's type is its default's (``config._field_types``): ``x: float = 5`` would make
    it a whole number, and mypy lets an int stand for a float."""
    sections = get_type_hints(config.Config)
    for name, section in config.Config()._asdict().items():
        assert sections[name] is type(section)
        keys = get_type_hints(type(section))
        for key, default in section._asdict().items():
            assert keys[key] is type(default), f"{name}.{key}"


# --- the documented file ------------------------------------------------------------


def test_documented_file_builds_to_the_code_defaults() -> None:
    assert config.build(documented(), {}) == config.Config()


def test_documented_file_lists_every_key_and_no_other() -> None:
    raw = documented()
    expected = section_fields()
    assert len(expected) >= 7  # the checker sees the real sections
    assert set(raw) == set(expected)
    for name, keys in expected.items():
        assert isinstance(raw[name], dict)
        assert set(raw[name]) == keys, name


def test_load_reads_the_home_file_and_defaults_without_one(tmp_path: Path) -> None:
    assert config.load(tmp_path, {}) == config.Config()
    (tmp_path / config.CONFIG_FILE_NAME).write_text("[metrics]\nport = 9470\n")
    cfg = config.load(tmp_path, {})
    assert cfg.metrics.port == 9470
    assert cfg.gossip == config.GossipConfig()


def test_the_parsed_copy_serves_an_unchanged_file_only(tmp_path: Path) -> None:
    """A command reads the JSON copy while the file is the one it was made of: an edit
    (even of the same size, in the same second), a broken or foreign copy, or one that
    cannot be written, and the file is parsed."""
    path = tmp_path / config.CONFIG_FILE_NAME
    copy = tmp_path / f".{config.CONFIG_FILE_NAME}.parsed.json"
    path.write_text("[metrics]\nport = 9470\n")
    assert config.load(tmp_path, {}).metrics.port == 9470
    assert json.loads(copy.read_text())["toml"] == {"metrics": {"port": 9470}}
    stale = copy.read_text()
    path.write_text("[metrics]\nport = 9471\n")
    assert config.load(tmp_path, {}).metrics.port == 9471
    copy.write_text(stale)  # a copy of the file as it was
    assert config.load(tmp_path, {}).metrics.port == 9471
    copy.write_text("{not json")
    assert config.load(tmp_path, {}).metrics.port == 9471
    assert json.loads(copy.read_text())["toml"] == {"metrics": {"port": 9471}}  # renewed
    # The copy, not the file, when they agree: a copy edited in place is believed (it
    # is as private as the file, 0600 in the node's home).
    forged = json.loads(copy.read_text())
    forged["toml"]["metrics"]["port"] = 9472
    copy.write_text(json.dumps(forged))
    assert config.load(tmp_path, {}).metrics.port == 9472
    assert copy.stat().st_mode & 0o777 == 0o600


def test_a_file_whose_copy_cannot_be_written_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / config.CONFIG_FILE_NAME
    path.write_text('[node]\nname = "x"\n')
    copy = tmp_path / f".{config.CONFIG_FILE_NAME}.parsed.json"
    copy.mkdir()  # in the way of the rename, as an unwritable home is
    assert config.load(tmp_path, {}).node.name == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == [copy.name, config.CONFIG_FILE_NAME]


def test_unparseable_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / config.CONFIG_FILE_NAME
    path.write_text("[node\nname = 1\n")
    with pytest.raises(ConfigError, match=str(path)):
        config.load(tmp_path, {})


# --- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"nodes": {}}, "nodes"),
        ({"node": {"nmae": "x"}}, "node.nmae"),
        ({"node": 3}, "[node]"),
        ({"gossip": {"port": "9999"}}, "gossip.port"),
        ({"gossip": {"port": 9999.0}}, "gossip.port"),
        ({"bus": {"hwm": True}}, "bus.hwm"),
        ({"node": {"encrypt_messages": 1}}, "node.encrypt_messages"),
        ({"node": {"name": 5}}, "node.name"),
        ({"supervisor": {"backoff_max_s": "32"}}, "supervisor.backoff_max_s"),
        ({"store": {"synchronous": "off"}}, "store.synchronous"),
        ({"log": {"level": "loud"}}, "log.level"),
        ({"log": {"format": "JSON"}}, "log.format"),
        ({"supervisor": {"heartbeat_misses": -1}}, "supervisor.heartbeat_misses"),
        ({"supervisor": {"stop_timeout_s": -0.5}}, "supervisor.stop_timeout_s"),
        ({"bus": {"rpc_retries": -3}}, "bus.rpc_retries"),
        ({"store": {"batch_max_messages": -1}}, "store.batch_max_messages"),
        ({"metrics": {"port": 65536}}, "metrics.port"),
        ({"gossip": {"port": -1}}, "gossip.port"),
        ({"gossip": {"port": 100_000}}, "gossip.port"),
    ],
)
def test_invalid_values_are_refused_naming_the_key(raw: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.build(raw, {})
    assert named in str(info.value)


@pytest.mark.parametrize("port", [0, 1, 65535])
def test_port_bounds_are_accepted(port: int) -> None:
    assert config.build({"gossip": {"port": port}}, {}).gossip.port == port


def test_an_int_is_accepted_for_a_float_key_and_becomes_a_float() -> None:
    cfg = config.build({"supervisor": {"backoff_max_s": 10}}, {})
    assert cfg.supervisor.backoff_max_s == 10.0
    assert type(cfg.supervisor.backoff_max_s) is float


def test_every_choice_is_accepted() -> None:
    for sync in ("normal", "full", "extra"):
        assert config.build({"store": {"synchronous": sync}}, {}).store.synchronous == sync
    for level in ("debug", "info", "warning", "error"):
        assert config.build({"log": {"level": level}}, {}).log.level == level
    for fmt in ("auto", "json", "console"):
        assert config.build({"log": {"format": fmt}}, {}).log.format == fmt


# --- environment overrides ----------------------------------------------------------


def test_env_overrides_convert_to_the_key_type() -> None:
    env = {
        "FELUND_METRICS_PORT": "9465",
        "FELUND_SUPERVISOR_BACKOFF_MAX_S": "2.5",
        "FELUND_SUPERVISOR_HEALTHY_AFTER_S": "7",
        "FELUND_NODE_NAME": "bob",
        "FELUND_METRICS_ENABLED": "off",
        "FELUND_LOG_LEVEL": "debug",
    }
    cfg = config.build({}, env)
    assert cfg.metrics.port == 9465
    assert cfg.supervisor.backoff_max_s == 2.5
    assert cfg.supervisor.healthy_after_s == 7.0
    assert type(cfg.supervisor.healthy_after_s) is float
    assert cfg.node.name == "bob"
    assert cfg.metrics.enabled is False
    assert cfg.log.level == "debug"


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("1", True), ("true", True), ("yes", True), ("on", True), ("TRUE", True), (" On ", True),
        ("0", False), ("false", False), ("no", False), ("off", False), ("False", False),
    ],
)  # fmt: skip
def test_env_bool_words(word: str, value: bool) -> None:
    cfg = config.build({}, {"FELUND_NODE_ENCRYPT_MESSAGES": word})
    assert cfg.node.encrypt_messages is value


def test_env_wins_over_the_file() -> None:
    cfg = config.build({"metrics": {"port": 1000}}, {"FELUND_METRICS_PORT": "2000"})
    assert cfg.metrics.port == 2000


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FELUND_METRICS_FOO": "1"}, "FELUND_METRICS_FOO"),
        ({"FELUND_METRICS_PORT": "abc"}, "FELUND_METRICS_PORT"),
        ({"FELUND_METRICS_PORT": "1.5"}, "FELUND_METRICS_PORT"),
        ({"FELUND_SUPERVISOR_BACKOFF_MAX_S": "soon"}, "FELUND_SUPERVISOR_BACKOFF_MAX_S"),
        ({"FELUND_NODE_ENCRYPT_MESSAGES": "maybe"}, "FELUND_NODE_ENCRYPT_MESSAGES"),
        ({"FELUND_METRICS_PORT": "70000"}, "metrics.port"),
        ({"FELUND_BUS_HWM": "-5"}, "bus.hwm"),
        ({"FELUND_LOG_FORMAT": "xml"}, "log.format"),
    ],
)
def test_bad_env_overrides_are_refused(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.build({}, env)
    assert named in str(info.value)


def test_felund_home_and_foreign_variables_are_not_overrides() -> None:
    env = {"FELUND_HOME": "/tmp/somewhere", "HOME": "/root", "PATH": "/usr/bin"}
    assert config.build({}, env) == config.Config()
    assert config.build(documented(), env) == config.Config()


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("https://relay.example/v1", "https://relay.example"),
        ("https://relay.example/v1/", "https://relay.example"),
        ("http://127.0.0.1:8787/api/v1", "http://127.0.0.1:8787/api"),
    ],
)
def test_a_relay_url_ending_in_v1_is_refused_with_the_right_form(
    tmp_path: Path, url: str, base: str
) -> None:
    problem = config.relay_url_problem(url)
    assert "/v1" in problem and problem.endswith(f"use {base}")
    assert config.relay_url_problem(base) == ""
    for env in ({"FELUND_RELAY_URL": url}, {"FELUND_API_BASE": url}):
        with pytest.raises(ConfigError, match=f"use {base}$"):
            config.load(tmp_path, env)


@pytest.mark.parametrize("url", ["https://relay.example/v10", "https://relay.example/apiv1"])
def test_a_relay_url_merely_containing_v1_is_accepted(url: str) -> None:
    assert config.relay_url_problem(url) == ""


# --- rendering ----------------------------------------------------------------------


def round_trip(cfg: config.Config) -> config.Config:
    return config.build(tomllib.loads(config.render(cfg)), {})


def test_render_round_trips_the_defaults() -> None:
    assert round_trip(config.Config()) == config.Config()


def test_render_round_trips_changed_values() -> None:
    cfg = config.Config(
        node=config.NodeConfig(name='Zoë "the \\ admin" ✓', encrypt_messages=False),
        gossip=config.GossipConfig(bind="::", port=0, advertise_host="chat.example.org"),
        metrics=config.MetricsConfig(enabled=False, port=65535),
        store=config.StoreConfig(path="/var/lib/felund/x.db", synchronous="extra"),
        bus=config.BusConfig(runtime_dir="/run/felund", hwm=1, rpc_timeout_ms=0),
        supervisor=config.SupervisorConfig(heartbeat_interval_s=0.25, backoff_max_s=1e-05),
        log=config.LogConfig(level="error", format="json"),
    )
    assert round_trip(cfg) == cfg


def test_render_round_trips_a_name_with_control_characters() -> None:
    # A name can hold any character: TOML escapes of the file, or an override.
    cfg = config.build({}, {"FELUND_NODE_NAME": "line one\nline two\ttab\x7f\x1b[0m"})
    assert round_trip(cfg) == cfg


_printable_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40)
_floats = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)
_counts = st.integers(0, 2**31)
_ports = st.integers(0, 65535)


def _section(cls: Any, **keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``cls`` with the keys drawn from their strategies and the others at their defaults
    (``st.builds`` would draw every field of a NamedTuple, defaults or not)."""
    return st.fixed_dictionaries(keys).map(lambda values: cls(**values))


_configs = _section(
    config.Config,
    node=_section(config.NodeConfig, name=_printable_text, encrypt_messages=st.booleans()),
    gossip=_section(
        config.GossipConfig, bind=_printable_text, port=_ports, advertise_host=_printable_text
    ),
    metrics=_section(
        config.MetricsConfig, enabled=st.booleans(), bind=_printable_text, port=_ports
    ),
    store=_section(
        config.StoreConfig,
        path=_printable_text,
        synchronous=st.sampled_from(["normal", "full", "extra"]),
        batch_max_messages=_counts,
    ),
    bus=_section(
        config.BusConfig,
        runtime_dir=_printable_text,
        hwm=_counts,
        rpc_timeout_ms=_counts,
        rpc_retries=_counts,
    ),
    supervisor=_section(
        config.SupervisorConfig,
        heartbeat_interval_s=_floats,
        heartbeat_misses=_counts,
        backoff_initial_s=_floats,
        backoff_max_s=_floats,
        healthy_after_s=_floats,
        flap_window_s=_floats,
        flap_max_restarts=_counts,
        stop_timeout_s=_floats,
    ),
    log=_section(
        config.LogConfig,
        level=st.sampled_from(["debug", "info", "warning", "error"]),
        format=st.sampled_from(["auto", "json", "console"]),
    ),
)


@given(_configs)
def test_render_round_trips_any_valid_config(cfg: config.Config) -> None:
    assert round_trip(cfg) == cfg
