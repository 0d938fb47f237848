"""The node's runtime settings (``store.settings``): the relay URL, set while running or not.

relay-sync follows the store's effective relay URL: a real relay process,
real nodes, the real CLI. The supervisor's state machine for children that
come and go is driven with a fake clock at the end.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from felund.actor.runtime import load_context
from felund.actor.supervision import State, Supervision
from felund.bus.sockets import Bus, Subscriber
from felund.config import SupervisorConfig
from felund.errors import RPCError
from felund.protocol import (
    OP_CONTROL,
    OP_SETTINGS,
    SVC_GOSSIP,
    SVC_RELAY_SYNC,
    SVC_STORE,
    TOPIC_HEARTBEAT,
    TOPIC_SETTINGS_CHANGED,
)
from felund.store.database import Database
from felund.store.ops import NodeInfo, Ops
from felund.testing import Node, Relay, wait_for
from felund.v1 import ids

BAD_URLS = [
    "ftp://relay.example.org",
    "relay.example.org",
    "http://",
    "http://relay example.org",
    "http://relay.example.org/\x07",
    "https://user:secret@relay.example.org",
    "https://relay.example.org/api?x=1",
    "http://relay.example.org:http",
    "https://relay.example.org/" + "a" * 600,
]


def _node(make_node, name: str = "n", **env: str) -> Node:
    node: Node = make_node(
        name,
        FELUND_RELAY_POLL_INTERVAL_S="0.5",
        FELUND_RELAY_REGISTER_INTERVAL_S="2",
        FELUND_SUPERVISOR_BACKOFF_INITIAL_S="0.2",
        **env,
    )
    node.cli("init", "--bind", "127.0.0.1", "--name", name)
    node.circle_id = node.json("invite")["circle_id"]
    return node


def _services(node: Node) -> dict[str, dict[str, object]]:
    services: dict[str, dict[str, object]] = node.status()["services"]
    return services


def _relay_sync_running(node: Node) -> bool:
    s = _services(node).get(SVC_RELAY_SYNC)
    return s is not None and s["state"] == "running"


def _relay_sync_gone(node: Node) -> bool:
    return SVC_RELAY_SYNC not in _services(node)


def _relay_messages(relay: Relay, circle_id: str) -> int:
    url = f"{relay.url}/v1/messages?circle_hint={ids.circle_hint(circle_id)}&since=0&limit=500"
    with urllib.request.urlopen(url, timeout=5) as resp:  # loopback
        return len(json.loads(resp.read())["messages"])


def _store_says(sub: Subscriber, topic: str) -> dict[str, object]:
    """The next event of ``topic`` from the store (bounded wait)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = sub.recv(200)
        if got is not None and got.frame.topic == topic and got.frame.header.src == SVC_STORE:
            body: dict[str, object] = got.frame.body
            return body
    raise AssertionError(f"no {topic} from the store within 10 s")


def _registered(relay: Relay) -> int:
    return sum(e["status"] == 200 for e in relay.requests("/v1/register"))


def test_relay_url_set_while_running_starts_then_stops_relay_sync(make_node, relay) -> None:
    node = _node(make_node)
    node.start()
    assert _relay_sync_gone(node)  # no relay configured, none set
    assert node.json("relay", "url") == {"relay_url": ""}
    ctx = load_context(node.env)
    bus = Bus(ctx.layout, "test-settings", ctx.config.bus)
    try:
        sub = bus.subscriber(TOPIC_SETTINGS_CHANGED, TOPIC_HEARTBEAT)
        # A store heartbeat shows our subscription has reached its publisher.
        assert _store_says(sub, TOPIC_HEARTBEAT)["relay_url"] == ""

        set_ = node.cli("relay", "url", relay.url)
        assert set_.stdout.strip() == relay.url and "relay set" in set_.stderr
        assert _store_says(sub, TOPIC_SETTINGS_CHANGED) == {
            "display_name": "n",
            "relay_url": relay.url,
        }
        wait_for(lambda: _relay_sync_running(node), what="relay-sync to start")
        assert node.status()["relay_url"] == relay.url
        assert f"relay     {relay.url}" in node.cli("status").stdout
        wait_for(lambda: _registered(relay) >= 1, what="the node to register at the relay")
        node.cli("send", "--circle-id", node.circle_id, "to the relay")
        wait_for(
            lambda: _relay_messages(relay, node.circle_id) == 1,
            what="the message at the relay",
        )

        pid = node.service_pid(SVC_RELAY_SYNC)
        off = node.cli("relay", "url", "--off")
        assert off.stdout == "" and "relay off" in off.stderr
        assert _store_says(sub, TOPIC_SETTINGS_CHANGED)["relay_url"] == ""
        wait_for(lambda: _relay_sync_gone(node), what="relay-sync to stop")
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="its process to end")
        registered = _registered(relay)
        node.cli("send", "--circle-id", node.circle_id, "not to the relay")
        time.sleep(1.5)  # several poll intervals of a relay-sync, were one running
        assert _relay_messages(relay, node.circle_id) == 1
        assert _registered(relay) == registered
        assert node.status()["relay_url"] == ""
        events = [e for e in node.log_events() if e.get("child") == SVC_RELAY_SYNC]
        assert not any(e["event"] in ("child.exited", "child.unresponsive") for e in events)
        assert _services(node)[SVC_GOSSIP]["restarts"] == 0
    finally:
        bus.close()


def test_a_bad_relay_url_is_refused_and_changes_nothing(make_node, relay) -> None:
    node = _node(make_node)
    node.cli("relay", "url", relay.url)  # while stopped: on the database, under the lock
    node.start()
    wait_for(lambda: _relay_sync_running(node), what="relay-sync to start")
    pid = node.service_pid(SVC_RELAY_SYNC)
    for bad in BAD_URLS:
        refused = node.cli("relay", "url", bad, check=False)
        assert refused.returncode == 2, bad
        assert refused.stderr.startswith("felund: ") and "URL" in refused.stderr, refused.stderr
        assert len(refused.stderr.splitlines()) == 1
    refused = node.cli("relay", "url", relay.url, "--off", check=False)
    assert refused.returncode == 2 and "not both" in refused.stderr
    assert node.cli("relay", "url").stdout.strip() == relay.url
    time.sleep(1.2)  # past a store heartbeat: the supervisor would have acted by now
    assert node.service_pid(SVC_RELAY_SYNC) == pid
    assert _services(node)[SVC_RELAY_SYNC]["restarts"] == 0


def test_the_setting_survives_a_killed_node_and_wins_over_the_config(make_node, relay) -> None:
    # Configured with a relay, turned off at runtime: the setting wins.
    node = _node(make_node, FELUND_RELAY_URL=relay.url)
    assert node.cli("relay", "url").stdout.strip() == relay.url  # the config's, offline too
    node.cli("relay", "url", "--off")
    node.start()
    assert _relay_sync_gone(node)
    assert not any(
        e["event"] == "child.started" and e["child"] == SVC_RELAY_SYNC for e in node.log_events()
    )
    # Set while running, then SIGKILL the supervisor right after the acknowledgement.
    children = [node.service_pid(SVC_STORE), node.service_pid(SVC_GOSSIP)]
    node.cli("relay", "url", relay.url + "/")
    assert node.proc is not None
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait(timeout=10)
    node.log.close()
    wait_for(  # orphans exit by themselves
        lambda: not any(os.path.exists(f"/proc/{pid}") for pid in children),
        what="the orphaned children to exit",
    )
    node.start()  # waits for every child, relay-sync included, to run
    assert node.status()["relay_url"] == relay.url + "/"
    assert _relay_sync_running(node)
    wait_for(lambda: _registered(relay) >= 1, what="the node to register at the relay")


def _shown(node: Node, key: str) -> str:
    """One key's line of `felund config show`, as ``key = value``."""
    lines = node.cli("config", "show").stdout.splitlines()
    return next(line for line in lines if line.startswith(f"{key} = "))


def test_config_show_says_the_name_and_relay_the_node_uses(make_node, relay) -> None:
    node = _node(make_node, "alice")
    assert _shown(node, "name") == 'name = "alice"'  # the file's, before any rename
    node.cli("rename", "Alice B.")  # offline
    node.cli("relay", "url", relay.url)
    assert _shown(node, "name") == 'name = "Alice B."'
    assert _shown(node, "url") == f'url = "{relay.url}"'
    node.start()
    node.cli("rename", "Ally")  # while running
    assert _shown(node, "name") == 'name = "Ally"'


def test_settings_op(tmp_path: Path) -> None:
    db = Database(tmp_path / "felund.db")
    ops = Ops(db, NodeInfo("n" * 24, "nina", False, "", "https://configured.example/api"))
    with db.transaction():
        out = ops.handle(OP_SETTINGS, {})
        assert out.reply == {"display_name": "nina", "relay_url": "https://configured.example/api"}
        assert not out.settings_changed
        out = ops.handle(OP_SETTINGS, {"relay_url": "http://127.0.0.1:8080"})
        assert out.reply["relay_url"] == "http://127.0.0.1:8080" and out.settings_changed
        assert not ops.handle(OP_SETTINGS, {"relay_url": "http://127.0.0.1:8080"}).settings_changed
        for body in (
            *({"relay_url": bad} for bad in BAD_URLS),
            {"relay_url": 1},
            {"display_name": "x"},
            {"relay_url": "", "colour": "red"},
        ):
            with pytest.raises(RPCError) as refused:
                ops.handle(OP_SETTINGS, body)
            assert refused.value.code == "bad_request"
        assert ops.handle(OP_SETTINGS, {}).reply["relay_url"] == "http://127.0.0.1:8080"
        assert ops.handle(OP_SETTINGS, {"relay_url": ""}).reply["relay_url"] == ""  # off
        circle = ops.handle("store.circle.create", {"name": "c"}).reply["circle_id"]
        now = int(time.time())
        renamed = ops.handle(
            OP_CONTROL,
            {
                "circle_id": circle,
                "event": {
                    "t": "CHANNEL_EVT",
                    "op": "rename",
                    "actor_node_id": "n" * 24,
                    "display_name": "Nina B.",
                },
                "msg_id": ids.new_msg_id("n" * 24, now),
                "created_ts": now,
            },
        )
        assert renamed.settings_changed
    assert ops.handle(OP_SETTINGS, {}).reply == {"display_name": "Nina B.", "relay_url": ""}
    db.close()


def test_supervision_of_a_child_that_comes_and_goes() -> None:
    sup = Supervision(["store"], SupervisorConfig(), None)
    sup.hold("relay", 1000.0)
    assert sup.children["relay"].state is State.WAITING
    assert [a.kind for a in sup.due(1000.0)] == ["start"]  # the store only
    sup.started("store", 10, 1000.0)
    assert sup.restart("relay", 1000.0) == []  # not running: starts at the next due
    assert [(a.kind, a.name) for a in sup.due(1000.0)] == [("start", "relay")]
    sup.started("relay", 11, 1000.0)
    sup.heartbeat("relay", 11, 1000.5)
    # A new URL: stopped on purpose, started again at once, counted as neither crash nor restart.
    assert [(a.kind, a.pid) for a in sup.restart("relay", 1001.0)] == [("terminate", 11)]
    assert sup.exited("relay", -15, 1001.2) is State.BACKOFF
    assert [(a.kind, a.name) for a in sup.due(1001.2)] == [("start", "relay")]
    sup.started("relay", 12, 1001.2)
    relay = sup.children["relay"]
    assert relay.restarts == 0 and not relay.crashes and relay.failures == 0
    # Turned off: stopped and forgotten; a heartbeat from the old pid changes nothing.
    assert [(a.kind, a.pid) for a in sup.drop("relay", 1002.0)] == [("terminate", 12)]
    assert sup.due(1002.1) == []
    assert sup.exited("relay", 0, 1002.2) is State.STOPPED
    assert "relay" not in sup.children
    assert not sup.heartbeat("relay", 12, 1002.3)
    assert sup.drop("relay", 1002.4) == []
    # Off, then on again before the old process has gone: it starts once that one exits.
    sup.restart("relay", 1003.0)
    sup.due(1003.0)
    sup.started("relay", 13, 1003.0)
    sup.drop("relay", 1003.1)
    assert sup.restart("relay", 1003.2) == []  # a terminate is on its way
    assert sup.exited("relay", 0, 1003.3) is State.BACKOFF
    assert [(a.kind, a.name) for a in sup.due(1003.3)] == [("start", "relay")]
