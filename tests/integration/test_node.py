"""A real node: init, run, invite, send, inbox, status, metrics, and clear errors."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile

from felund.testing import Node, metric_value, wait_for
from felund.v1.invite import decode_invite


def test_init_names_the_port_the_node_will_listen_on(make_node) -> None:
    node = make_node()  # FELUND_GOSSIP_PORT set: it wins over the file's port
    said = node.cli("init", "--bind", "127.0.0.1").stderr
    assert f"gossip on 127.0.0.1:{node.env['FELUND_GOSSIP_PORT']};" in said


def test_init_run_invite_send_inbox(node: Node) -> None:
    shown = node.cli("invite", "--circle-id", node.circle_id)
    code = shown.stdout.strip().splitlines()
    assert len(code) == 1 and code[0].startswith("felund1.")
    invite = decode_invite(code[0])
    assert invite.peer == f"127.0.0.1:{node.env['FELUND_GOSSIP_PORT']}"
    # Which address the code names, and that only this machine reaches it.
    assert f"the code names {invite.peer}, reachable from this machine only" in shown.stderr
    assert "gossip.advertise_host" in shown.stderr

    node.cli("send", "--circle-id", node.circle_id, "hello ünïcödé | pipes")
    refused = node.cli(
        "send", "--circle-id", node.circle_id, "--channel", "random", "x", check=False
    )
    assert refused.returncode == 2 and "no channel #random" in refused.stderr
    node.cli("channel", "create", "random", "--circle-id", node.circle_id)
    node.cli("send", "--circle-id", node.circle_id, "--channel", "random", "over there")
    inbox = node.json("inbox", "--circle-id", node.circle_id)
    assert [m["text"] for m in inbox] == ["hello ünïcödé | pipes", "over there"]
    first = inbox[0]
    assert {"msg_id", "channel_id", "author_node_id", "display_name", "created_ts", "text"} <= set(
        first
    )
    assert first["display_name"] == "alice"
    assert first["author_node_id"] == node.status()["node_id"]
    only_random = node.json("inbox", "--circle-id", node.circle_id, "--channel", "random")
    assert [m["text"] for m in only_random] == ["over there"]
    assert [
        m["text"] for m in node.json("inbox", "--circle-id", node.circle_id, "--limit", "1")
    ] == ["over there"]
    plain = node.cli("inbox", "--circle-id", node.circle_id).stdout
    assert "<alice> hello ünïcödé | pipes" in plain


def test_status_json(node: Node) -> None:
    node.cli("send", "--circle-id", node.circle_id, "one")
    status = node.status()
    assert len(status["node_id"]) == 24
    (circle,) = status["circles"]
    assert (circle["circle_id"], circle["name"]) == (node.circle_id, "")
    # Gossip's report, once its heartbeat carries the circle: nobody else in it.
    assert circle.get("gossip", {"peers": 0})["peers"] == 0
    # "one", and in the circle it made its owner's proof and its key announced
    assert status["messages"] == 3
    assert status["metrics_url"].startswith("http://127.0.0.1:")
    store = status["services"]["store"]
    assert store["state"] == "running" and store["restarts"] == 0
    assert isinstance(store["pid"], int) and store["pid"] != os.getpid()


def test_state_is_private(node: Node) -> None:
    assert stat.S_IMODE(node.home.stat().st_mode) == 0o700
    assert stat.S_IMODE((node.home / "run").stat().st_mode) == 0o700
    assert stat.S_IMODE((node.home / "felund.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((node.home / "identity.json").stat().st_mode) == 0o600


def test_metrics_from_every_child(node: Node) -> None:
    node.cli("send", "--circle-id", node.circle_id, "counted")
    services = list(node.status()["services"])

    def published_by_all() -> str | None:
        # A child's publish count reaches /metrics at its heartbeat after the publish.
        text = node.metrics()
        counts = [metric_value(text, "felund_bus_published_total", service=s) for s in services]
        return text if all(counts) else None

    text = wait_for(published_by_all, what="every child's publish count in /metrics")
    for service in services:
        assert metric_value(text, "felund_service_up", service=service) == 1.0
        # Written by the child itself, not by the supervisor on its behalf.
        assert metric_value(text, "felund_service_start_time_seconds", service=service)
        assert metric_value(text, "felund_bus_published_total", service=service)
    # The message, and in the circle it made (while running) the owner's proof and its key.
    assert metric_value(text, "felund_store_appends_total", origin="local") == 3.0
    assert metric_value(text, "felund_bus_published_total", service="supervisor")


def test_commands_work_while_stopped(make_node) -> None:
    n = make_node()
    n.cli("init", "--name", "bob")
    circle = n.json("invite")["circle_id"]
    n.cli("send", "--circle-id", circle, "written offline")
    assert n.status()["running"] is False
    n.start()
    assert n.status()["running"] is True
    assert [m["text"] for m in n.json("inbox", "--circle-id", circle)] == ["written offline"]
    n.cli("send", "--circle-id", circle, "written online")
    assert n.stop() == 0
    assert [m["text"] for m in n.json("inbox", "--circle-id", circle)] == [
        "written offline",
        "written online",
    ]


def test_join_by_code(make_node) -> None:
    a, b = make_node("a"), make_node("b")
    a.cli("init")
    b.cli("init")
    code = a.cli("invite").stdout.strip()
    circle = b.cli("join", "--code", code).stdout.strip()
    assert circle == a.json("circles")[0]["circle_id"]
    assert b.json("circles")[0]["circle_id"] == circle
    assert b.json("peers")[0]["addr"] == decode_invite(code).peer
    again = b.cli("join", "--code", code)
    assert again.returncode == 0 and "already" in again.stderr


def _assert_one_line_error(result, *words: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_clear_errors_running_and_stopped(make_node) -> None:
    n = make_node()
    n.cli("init")
    for running in (False, True):
        if running:
            n.start()
        _assert_one_line_error(
            n.cli("send", "--circle-id", "0" * 24, "x", check=False), "not in circle"
        )
        _assert_one_line_error(n.cli("inbox", "--circle-id", "nope", check=False), "not in circle")
        _assert_one_line_error(n.cli("join", "--code", "felund1.!!!!", check=False), "invite")
        _assert_one_line_error(n.cli("join", "--code", "felund2.abc", check=False), "invite")
        _assert_one_line_error(
            n.cli("send", "--circle-id", "x", "--channel", "Bad Name", "t", check=False)
        )
        _assert_one_line_error(n.cli("inbox", "--circle-id", "x", "--limit", "0", check=False))
        _assert_one_line_error(n.cli("frobnicate", check=False))


def test_bad_config_is_one_line(make_node) -> None:
    n = make_node(FELUND_METRICS_PROT="1")
    _assert_one_line_error(n.cli("status", check=False), "FELUND_METRICS_PROT")
    n = make_node("other")
    n.home.mkdir()
    (n.home / "felund.toml").write_text("[store]\nsynchronous = 'sometimes'\n")
    _assert_one_line_error(n.cli("run", check=False), "store.synchronous")


def test_busy_ports_are_one_line(make_node) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        n = make_node("metrics", FELUND_METRICS_BIND="127.0.0.1", FELUND_METRICS_PORT=port)
        n.cli("init", "--bind", "127.0.0.1")
        _assert_one_line_error(
            n.cli("run", check=False), f"cannot serve metrics on 127.0.0.1:{port}"
        )
        n = make_node("gossip", FELUND_GOSSIP_PORT=port)
        n.cli("init", "--bind", "127.0.0.1")
        _assert_one_line_error(
            n.cli("run", check=False), f"cannot listen for peers on 127.0.0.1:{port}"
        )


def test_send_stdin_skips_blank_lines_and_refuses_bad_ones(node: Node) -> None:
    sent = node.cli("send", "--circle-id", node.circle_id, "--stdin", stdin=b"a\n\n  \nb\r\nc")
    assert "sent 3" in sent.stderr
    assert [m["text"] for m in node.json("inbox", "--circle-id", node.circle_id)] == ["a", "b", "c"]
    bad = node.cli(
        "send", "--circle-id", node.circle_id, "--stdin", stdin=b"ok\n\xff\xfe\n", check=False
    )
    _assert_one_line_error(bad, "line 2", "UTF-8")


def test_second_node_on_same_home_refused(node: Node) -> None:
    again = node.cli("run", check=False, timeout=30)
    assert again.returncode != 0
    assert "already running" in again.stderr
    assert node.status()["services"]["store"]["state"] == "running"


def test_sigterm_stops_cleanly(node: Node) -> None:
    store_pid = node.service_pid("store")
    assert node.stop() == 0
    wait_for(lambda: not os.path.exists(f"/proc/{store_pid}"), what="the store to exit")
    log = [
        json.loads(line) for line in node.log_path.read_text().splitlines() if line.startswith("{")
    ]
    events = [entry["event"] for entry in log]
    assert "node.stopped" in events and "store.stopped" in events
    # Logs carry who wrote them, and never a secret.
    assert all({"service", "node_id", "pid"} <= set(entry) for entry in log)


def test_commands_find_a_node_with_another_runtime_dir(make_node) -> None:
    runtime = tempfile.mkdtemp(prefix="felund-rt-")
    try:
        n = make_node(FELUND_BUS_RUNTIME_DIR=runtime)
        n.cli("init")
        n.start()
        del n.env["FELUND_BUS_RUNTIME_DIR"]  # as a user's shell would be
        circle = n.json("invite")["circle_id"]
        n.cli("send", "--circle-id", circle, "found it")
        assert n.status()["services"]["store"]["state"] == "running"
        assert [m["text"] for m in n.json("inbox", "--circle-id", circle)] == ["found it"]
        # The lock lives in the home, so no second node can start on it.
        again = n.cli("run", check=False, timeout=30)
        assert again.returncode != 0 and "already running" in again.stderr
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def test_stop_stops_the_node_cleanly_and_waits(node: Node) -> None:
    assert node.proc is not None
    supervisor = node.proc.pid
    assert node.status()["supervisor_pid"] == supervisor
    store_pid = node.service_pid("store")
    stopped = node.cli("stop")
    # Gone when `felund stop` returns: the supervisor has exited (status 0), after its children.
    assert node.proc.poll() == 0
    assert not os.path.exists(f"/proc/{store_pid}")
    assert stopped.stderr.splitlines()[-1] == "stopped"
    assert "node.stopped" in [e["event"] for e in node.log_events()]
    assert node.status()["running"] is False
    again = node.cli("stop")
    assert again.returncode == 0 and "no node is running" in again.stderr
