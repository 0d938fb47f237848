"""The files of ``deploy/`` checked by the tools that run them.

systemd units: ``systemd-analyze verify``; Prometheus config and alert
rules: ``promtool check config``, ``promtool check rules`` and the rules'
unit tests (``promtool test rules``); the Grafana dashboard: valid JSON
whose queries parse as PromQL. Every ``felund_*`` metric named in the
rules or the dashboard must be one that ``felund/metrics.py`` (the node) or
``felund/relay/server/metrics.py`` (the relay server) defines, so renaming a
metric breaks this test rather than a user's alerts.

systemd-analyze and promtool come from the distribution's packages
(``systemd``, ``prometheus``). Without them these tests skip, except
under CI (``$CI`` set), where a missing tool is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

import felund.metrics
import felund.relay.server.metrics
from felund.relay.server.connections import OVERSHOOT, RESERVED_FDS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEM_UNITS = DEPLOY / "systemd" / "system"
USER_UNITS = DEPLOY / "systemd" / "user"
PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "felund.rules.yml"
DASHBOARD = DEPLOY / "grafana" / "felund.json"

# Where deploy/README.md installs felund for the system units.
SYSTEM_FELUND = "/opt/felund/bin/felund"
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}


def tool(name: str) -> str:
    """The path of a required command-line tool; skip, or fail under CI, without it."""
    path = shutil.which(name)
    if path is None:
        message = (
            f"{name} is not installed; CI installs it from the distribution's packages "
            "(apt-get install -y prometheus systemd)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kwargs)


# --- felund/metrics.py and the relay's: the names that exist ---------------------
def defined_metrics() -> dict[str, set[str]]:
    """Every series name the node's and the relay's metrics export, with its label names."""
    names: dict[str, set[str]] = {}
    values = [*vars(felund.metrics).values(), *vars(felund.relay.server.metrics).values()]
    for value in values:
        if not isinstance(value, MetricWrapperBase):
            continue
        (family,) = value.describe()
        labels = set(value._labelnames)
        if isinstance(value, Counter):
            series = [f"{family.name}_total"]
        elif isinstance(value, Histogram):
            names[f"{family.name}_bucket"] = labels | {"le"}
            series = [f"{family.name}_sum", f"{family.name}_count"]
        elif isinstance(value, Gauge):
            series = [family.name]
        else:  # pragma: no cover - a Summary or Info would need its own suffixes here
            raise AssertionError(f"unexpected metric type {type(value).__name__}")
        for name in series:
            names[name] = labels
    return names


METRIC_RE = re.compile(r"\b(felund_[a-z0-9_]+)\b(?:\{([^}]*)\})?")
LABEL_RE = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def check_references(text: str, where: str) -> set[str]:
    """Assert every felund_* metric (and selector label) in text is defined; return the names."""
    defined = defined_metrics()
    used: set[str] = set()
    for match in METRIC_RE.finditer(text):
        name, selector = match.group(1), match.group(2)
        assert name in defined, f"{where} uses {name}, which felund/metrics.py does not define"
        used.add(name)
        for label in LABEL_RE.findall(selector or ""):
            assert label in defined[name] | TARGET_LABELS, (
                f"{where}: {name} has no label {label!r} (it has {sorted(defined[name])})"
            )
    return used


def test_the_metric_name_check_sees_metrics_py() -> None:
    defined = defined_metrics()
    assert "felund_store_appends_total" in defined
    assert "felund_store_commit_seconds_bucket" in defined
    assert "felund_gossip_peers_connected" in defined
    assert defined["felund_service_restarts_total"] == {"service"}
    with pytest.raises(AssertionError, match="felund_store_append_total"):
        check_references("rate(felund_store_append_total[5m])", "probe")
    with pytest.raises(AssertionError, match="no label 'peer'"):
        check_references('felund_gossip_peers_connected{peer="x"}', "probe")


# --- systemd ------------------------------------------------------------------
def unit_settings(path: Path) -> dict[str, list[str]]:
    """The unit's Key=value lines (all sections), values in order of appearance."""
    settings: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def assert_verified(result: subprocess.CompletedProcess[str], unit: str) -> None:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, f"systemd-analyze verify {unit} failed:\n{output}"
    # Unknown keys and bad values are only warnings (exit status 0): fail on
    # any line about our unit too.
    about_unit = [line for line in output.splitlines() if unit in line]
    assert not about_unit, f"systemd-analyze verify {unit}:\n" + "\n".join(about_unit)


@pytest.fixture
def stub_felund(tmp_path: Path) -> Path:
    stub = tmp_path / "stub" / "felund"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    return stub


SYSTEM_UNIT_NAMES = ["felund.service", "felund-relay.service", "felund-relay@.service"]


def instance(name: str) -> str:
    """The name a unit file is verified as: a template as one of its instances."""
    return name.replace("@.", "@8081.")


@pytest.mark.parametrize("name", SYSTEM_UNIT_NAMES)
def test_system_units_verify(name: str, tmp_path: Path, stub_felund: Path) -> None:
    # `systemd-analyze verify` checks that the program of ExecStart= exists. The
    # units name /opt/felund/bin/felund, where the README installs felund,
    # which does not exist on a CI machine (and creating it would need
    # root). So we verify a copy in which that one absolute path, and
    # nothing else, points at an executable stub: every other line is the
    # shipped one. (--root= could keep the file intact but needs a whole
    # unit tree under the root and varies between systemd versions.)
    analyze = tool("systemd-analyze")
    shipped = (SYSTEM_UNITS / name).read_text()
    assert f"ExecStart={SYSTEM_FELUND} " in shipped, "ExecStart moved: update SYSTEM_FELUND"
    unit = tmp_path / instance(name)
    unit.write_text(shipped.replace(f"ExecStart={SYSTEM_FELUND} ", f"ExecStart={stub_felund} "))
    assert_verified(run([analyze, "verify", str(unit)]), instance(name))


def test_user_unit_verifies_as_user_unit(tmp_path: Path, stub_felund: Path) -> None:
    # The user unit runs %h/.local/bin/felund (pipx's place). Here it is
    # verified unchanged, by a user manager whose home ($HOME, which %h
    # resolves to) holds a stub felund there. The user manager needs a
    # runtime directory, so $XDG_RUNTIME_DIR gets a fresh one too.
    analyze = tool("systemd-analyze")
    fake_home = tmp_path / "home"
    (fake_home / ".local" / "bin").mkdir(parents=True)
    (fake_home / ".local" / "bin" / "felund").symlink_to(stub_felund)
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    unit = tmp_path / "felund.service"
    shutil.copy(USER_UNITS / "felund.service", unit)
    env = {**os.environ, "HOME": str(fake_home), "XDG_RUNTIME_DIR": str(runtime)}
    assert_verified(run([analyze, "--user", "verify", str(unit)], env=env), "felund.service")


def test_a_broken_unit_fails_verification(tmp_path: Path, stub_felund: Path) -> None:
    analyze = tool("systemd-analyze")
    unit = tmp_path / "felund.service"
    text = (SYSTEM_UNITS / "felund.service").read_text()
    unit.write_text(text.replace(SYSTEM_FELUND, str(stub_felund)).replace("UMask=", "UMsak="))
    result = run([analyze, "verify", str(unit)])
    with pytest.raises(AssertionError, match="UMsak"):
        assert_verified(result, "felund.service")
    if Path(SYSTEM_FELUND).exists():
        return  # felund is installed where the unit expects it: nothing missing to detect
    unit.write_text(text)  # the real ExecStart, absent here
    with pytest.raises(AssertionError, match="failed"):
        assert_verified(run([analyze, "verify", str(unit)]), "felund.service")


def test_system_unit_is_hardened_enough(tmp_path: Path, stub_felund: Path) -> None:
    # `systemd-analyze security` scores exposure from 0 (locked down) to 10;
    # 2.0 is far below what most distribution units get.
    analyze = tool("systemd-analyze")
    for name in SYSTEM_UNIT_NAMES:
        unit = tmp_path / instance(name)
        text = (SYSTEM_UNITS / name).read_text()
        unit.write_text(text.replace(SYSTEM_FELUND, str(stub_felund)))
        result = run([analyze, "security", "--offline=yes", "--threshold=20", str(unit)])
        if "--offline" in result.stderr and "unrecognized" in result.stderr:
            pytest.skip("systemd-analyze security --offline needs systemd 250 or later")
        assert result.returncode == 0, f"{name} exposure above 2.0:\n{result.stdout[-3000:]}"


def node_units() -> Iterator[tuple[str, dict[str, list[str]]]]:
    yield "system", unit_settings(SYSTEM_UNITS / "felund.service")
    yield "user", unit_settings(USER_UNITS / "felund.service")


@pytest.mark.parametrize(("kind", "settings"), list(node_units()))
def test_node_units_say_what_the_issue_asks(kind: str, settings: dict[str, list[str]]) -> None:
    def one(key: str) -> str:
        assert key in settings, f"{kind} unit lacks {key}="
        return settings[key][-1]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("Restart") == "on-failure"
    watchdog = one("WatchdogSec")
    assert watchdog.endswith("s")
    # A sensible multiple of the 1 s heartbeat: several misses tolerated.
    assert 3 <= float(watchdog[:-1]) <= 60
    assert one("ExecStart").split()[1:] == ["run"]
    assert one("ExecStart").startswith(("/", "%h/"))
    assert one("NoNewPrivileges") == "yes"
    assert one("ProtectSystem") == "strict"
    assert one("PrivateTmp") == "yes"
    assert one("UMask") == "0077"
    assert one("RuntimeDirectory") == "felund"
    env = dict(value.split("=", 1) for value in settings["Environment"])
    # %t is /run in a system unit and $XDG_RUNTIME_DIR in a user unit, the
    # same places RuntimeDirectory= creates its directory in.
    assert env["FELUND_BUS_RUNTIME_DIR"] == "%t/felund"
    if kind == "system":
        assert one("ProtectHome") == "yes"
        assert one("StateDirectory") == "felund"
        assert env["FELUND_HOME"] == "/var/lib/felund"
        assert one("User") == "felund"
        assert one("WantedBy") == "multi-user.target"
    else:
        # A user manager can only build the namespaces behind ProtectSystem=
        # and friends inside a user namespace.
        assert one("PrivateUsers") == "yes"
        # Home read-only except the state directory (and the runtime one).
        assert one("ProtectHome") == "read-only"
        assert env["FELUND_HOME"] == "%h/.felund"
        assert set(one("ReadWritePaths").split()) == {"%h/.felund", "%t/felund"}
        assert "User" not in settings
        assert one("WantedBy") == "default.target"


def test_relay_unit() -> None:
    settings = unit_settings(SYSTEM_UNITS / "felund-relay.service")
    argv = settings["ExecStart"][-1].split()
    assert argv[:3] == [SYSTEM_FELUND, "relay", "serve"]
    assert argv[argv.index("--port") + 1] == "8080"  # prometheus.yml scrapes it there
    # The connection cap fits the open-files limit, with the relay's own reserve.
    cap = int(argv[argv.index("--max-connections") + 1])
    assert cap <= int(settings["LimitNOFILE"][-1]) - RESERVED_FDS - OVERSHOOT
    assert settings["Restart"] == ["on-failure"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    # nginx on this machine names the clients (deploy/README.md).
    assert argv[argv.index("--trusted-proxy") + 1] == "127.0.0.1"


def test_relay_instance_template() -> None:
    settings = unit_settings(SYSTEM_UNITS / "felund-relay@.service")
    argv = settings["ExecStart"][-1].split()
    assert argv[:3] == [SYSTEM_FELUND, "relay", "serve"]
    assert argv[argv.index("--port") + 1] == "%i"  # the instance is its port
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--trusted-proxy") + 1] == "127.0.0.1"
    assert argv[argv.index("--config") + 1] == "/etc/felund-relay/relay.toml"
    assert "--db" not in argv  # FELUND_RELAY_DB from the EnvironmentFile: no password in ps
    assert settings["EnvironmentFile"] == ["/etc/felund-relay/relay.env"]
    cap = int(argv[argv.index("--max-connections") + 1])
    assert cap <= int(settings["LimitNOFILE"][-1]) - RESERVED_FDS - OVERSHOOT
    assert "StateDirectory" not in settings  # the state is the database's
    single = unit_settings(SYSTEM_UNITS / "felund-relay.service")
    for key in ("Restart", "NoNewPrivileges", "ProtectSystem", "SystemCallFilter", "DynamicUser"):
        assert settings[key] == single[key], key


# --- Prometheus -----------------------------------------------------------------
def test_prometheus_config_checks() -> None:
    promtool = tool("promtool")
    result = run([promtool, "check", "config", str(PROMETHEUS / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b1 rule files? found", result.stdout + result.stderr)
    text = (PROMETHEUS / "prometheus.yml").read_text()
    assert re.search(r"job_name: felund-node\n\s+static_configs:\n.*127\.0\.0\.1:9464", text)
    assert re.search(r"job_name: felund-relay\n\s+static_configs:\n.*127\.0\.0\.1:8080", text)


def test_alert_rules_check() -> None:
    promtool = tool("promtool")
    result = run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr


ALERTS = {
    "FelundNodeDown",
    "FelundServiceFlapping",
    "FelundServiceFailed",
    "FelundNoPeers",
    "FelundRelayUnreachable",
    "FelundStoreErrors",
    "FelundDiskFilling",
    "FelundDiskFull",
    "FelundRelayErrors",
    "FelundRelaySlow",
    "FelundRelayDatabaseDown",
    "FelundRelayDatabasePoolExhausted",
    "FelundRelayMembersLimited",
}


def test_alert_rules_unit_tests_pass() -> None:
    promtool = tool("promtool")
    result = run([promtool, "test", "rules", "felund.rules.test.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    rules = RULES.read_text()
    assert set(re.findall(r"- alert: (\w+)", rules)) == ALERTS
    assert rules.count("summary:") == rules.count("description:") == len(ALERTS)
    tests = (PROMETHEUS / "felund.rules.test.yml").read_text()
    # Split into (alertname, exp_alerts) cases: exp_alerts is "[]" when quiet.
    cases = re.findall(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", tests)
    for alert in ALERTS:
        outcomes = {quiet == "" for name, quiet in cases if name == alert}
        assert outcomes == {True, False}, f"{alert} needs a case that fires and one that does not"


def test_alert_rules_use_only_defined_metrics() -> None:
    used = check_references(RULES.read_text(), str(RULES))
    assert used >= {
        "felund_service_restarts_total",
        "felund_service_failed",
        "felund_gossip_peers_connected",
        "felund_relay_last_success_timestamp_seconds",
        "felund_store_errors_total",
        "felund_store_disk_free_bytes",
        "felund_relay_server_internal_errors_total",
        "felund_relay_server_request_duration_seconds_bucket",
        "felund_relay_server_db_up",
        "felund_relay_server_db_pool_waiting",
        "felund_relay_server_limited_total",
    }
    check_references((PROMETHEUS / "felund.rules.test.yml").read_text(), "the rule tests")


# --- Grafana --------------------------------------------------------------------
def dashboard_queries(node: Any) -> Iterator[str]:
    """Every PromQL expression in the dashboard: panel targets and variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from dashboard_queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item)


def test_dashboard_is_valid_and_uses_defined_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    queries = list(dashboard_queries(dashboard))
    assert len(queries) >= 20
    used = check_references("\n".join(queries), str(DASHBOARD))
    # What the issue asks the dashboard to show.
    assert used >= {
        "felund_gossip_messages_total",  # messages in and out
        "felund_gossip_peers_connected",  # peers
        "felund_delivery_latency_seconds_bucket",  # sync latency
        "felund_service_restarts_total",  # restarts
        "felund_relay_last_success_timestamp_seconds",  # relay health
        # The relay server: latency, errors, feed clients, database pool.
        "felund_relay_server_request_duration_seconds_bucket",
        "felund_relay_server_rejections_total",
        "felund_relay_server_internal_errors_total",
        "felund_relay_server_limited_total",
        "felund_relay_server_websocket_connections",
        "felund_relay_server_db_pool_size",
        "felund_relay_server_db_pool_in_use",
        "felund_relay_server_db_pool_waiting",
        "felund_relay_server_db_up",
    }
    assert any('up{job="felund-relay"' in query for query in queries)


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool has no "check this expression" command, but it parses the
    # expressions of recording rules: wrap every panel query in one, with
    # Grafana's variables replaced by what they expand to.
    promtool = tool("promtool")
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [query for query in dashboard_queries(dashboard) if not query.startswith("label_")]
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for number, expr in enumerate(exprs):
        expanded = (
            expr.replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$relay", ".*")
        )
        assert "$" not in expanded, f"unknown Grafana variable in {expr}"
        lines += [
            f"      - record: dashboard:query_{number}",
            f"        expr: {json.dumps(expanded)}",
        ]
    rules = tmp_path / "dashboard.rules.yml"
    rules.write_text("\n".join(lines) + "\n")
    result = run([promtool, "check", "rules", str(rules)])
    assert result.returncode == 0, result.stdout + result.stderr
