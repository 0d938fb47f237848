"""The node's runtime settings (``store.settings``): the relay URL, set while running or not.

relay-sync follows the store's effective relay URL: a real relay process,
real nodes, the real CLI. The operation itself is tests/unit/test_ops_node.py,
the supervisor's state machine for children that come and go test_supervision.py.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from typing import Any

from felund.bus.sockets import Subscriber
from felund.protocol import (
    CONTROL_CHANNEL,
    SVC_GOSSIP,
    SVC_RELAY_SYNC,
    SVC_STORE,
    TOPIC_HEARTBEAT,
    TOPIC_MSG_STORED,
    TOPIC_SETTINGS_CHANGED,
)
from felund.testing import Node, Relay, wait_for
from felund.v1 import ids
from tests.unit.test_ops_node import BAD_URLS


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
    """Chat messages of the circle at the relay (a new circle's control events aside)."""
    url = f"{relay.url}/v1/messages?circle_hint={ids.circle_hint(circle_id)}&since=0&limit=500"
    with urllib.request.urlopen(url, timeout=5) as resp:  # loopback
        messages = json.loads(resp.read())["messages"]
    return sum(m["channel_id"] != CONTROL_CHANNEL for m in messages)


def _store_says(sub: Subscriber, topic: str) -> dict[str, Any]:
    """The next event of ``topic`` from the store (bounded wait)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = sub.recv(200)
        if got is not None and got.frame.topic == topic and got.frame.header.src == SVC_STORE:
            body: dict[str, Any] = got.frame.body
            return body
    raise AssertionError(f"no {topic} from the store within 10 s")


def _registered(relay: Relay) -> int:
    return sum(e["status"] == 200 for e in relay.requests("/v1/register"))


def test_relay_url_set_while_running_starts_then_stops_relay_sync(make_node, relay) -> None:
    node = _node(make_node)
    node.start()
    assert _relay_sync_gone(node)  # no relay configured, none set
    assert node.json("relay", "url") == {"relay_url": ""}
    sub = node.subscribe(TOPIC_SETTINGS_CHANGED, TOPIC_HEARTBEAT, TOPIC_MSG_STORED)
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
    # Live: the store announced it where a relay-sync would take it, then said twice
    # that there is no relay (what the supervisor starts relay-sync by).
    rows = _store_says(sub, TOPIC_MSG_STORED)["msgs"]
    assert [r["text"] for r in rows] == ["not to the relay"]
    for _ in range(2):
        assert _store_says(sub, TOPIC_HEARTBEAT)["relay_url"] == ""
    assert _relay_sync_gone(node)
    assert _relay_messages(relay, node.circle_id) == 1
    assert _registered(relay) == registered
    assert node.status()["relay_url"] == ""
    events = [e for e in node.log_events() if e.get("child") == SVC_RELAY_SYNC]
    assert not any(e["event"] in ("child.exited", "child.unresponsive") for e in events)
    assert _services(node)[SVC_GOSSIP]["restarts"] == 0


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
    # Two store heartbeats after the refusals still name the relay: the supervisor,
    # which follows them, has seen at least one, and would have acted by now.
    sub = node.subscribe(TOPIC_HEARTBEAT)
    for _ in range(2):
        assert _store_says(sub, TOPIC_HEARTBEAT)["relay_url"] == relay.url
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
