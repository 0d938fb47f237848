"""Relay-sync between real nodes through a real relay process on 127.0.0.1.

The nodes' gossip cannot reach each other: each listens on 127.0.0.1 only
but advertises 127.0.0.2 (``gossip.advertise_host``), so the address in the
invite code and the one registered at the relay are refused at once by the
kernel, and every message that crosses must cross through the relay. The
tests check that gossip moved nothing.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import pytest

from felund.actor.runtime import load_context
from felund.bus.envelope import Frame
from felund.bus.sockets import Bus
from felund.protocol import (
    OP_CIRCLE_CREATE,
    OP_POST,
    SVC_RELAY_SYNC,
    SVC_STORE,
    TOPIC_HEARTBEAT,
    TOPIC_MSG_STORED,
)
from felund.relay.client import signed_headers
from felund.store.database import Database
from felund.store.ops import NodeInfo, Ops
from felund.testing import (
    FELUND,
    REPO,
    Node,
    Relay,
    metric_total,
    metric_value,
    wait_for,
    wire_message,
)
from felund.v1 import crypto, ids
from felund.v1.invite import decode_invite, encode_invite
from felund.v1.wire import compose_message, open_message, parse_message, to_wire

UNREACHABLE_HOST = "127.0.0.2"  # loopback, but nothing listens there


def _node(make_node, name: str, relay: Relay, **env: str) -> Node:
    node: Node = make_node(
        name,
        FELUND_RELAY_URL=relay.url,
        FELUND_RELAY_POLL_INTERVAL_S="0.5",
        FELUND_RELAY_REGISTER_INTERVAL_S="2",
        FELUND_GOSSIP_ADVERTISE_HOST=UNREACHABLE_HOST,
        FELUND_GOSSIP_ROUND_INTERVAL_S="0.5",
        FELUND_SUPERVISOR_BACKOFF_INITIAL_S="0.2",
        **env,
    )
    node.cli("init", "--bind", "127.0.0.1", "--name", name)
    return node


@pytest.fixture
def pair(make_node, relay: Relay) -> tuple[Node, Node]:
    a = _node(make_node, "a", relay)
    b = _node(make_node, "b", relay)
    code = a.cli("invite").stdout.strip()
    circle = b.cli("join", "--code", code).stdout.strip()
    a.start()
    b.start()
    a.circle_id = b.circle_id = circle
    return a, b


def _texts(node: Node) -> list[str]:
    return [m["text"] for m in node.inbox(node.circle_id)]


def _relay_failures(node: Node) -> float:
    """The node's failed requests to the relay, of every kind."""
    text = node.metrics()
    requests = "felund_relay_requests_total"
    return metric_total(text, requests) - metric_total(text, requests, outcome="ok")


def _wait_holding(node: Node, want: list[str], timeout: float) -> None:
    def holds() -> bool:
        return len(_texts(node)) >= len(want)

    wait_for(holds, timeout=timeout, interval=0.5, what=f"{node.home.name} to hold every message")
    assert sorted(_texts(node)) == want


def _assert_no_gossip(*nodes: Node) -> None:
    for node in nodes:
        text = node.metrics()
        assert (metric_value(text, "felund_gossip_messages_total", direction="in") or 0) == 0
        assert (metric_value(text, "felund_gossip_peers_connected") or 0) == 0


def _send_many(node: Node, lines: list[str]) -> None:
    proc = subprocess.run(  # noqa: PLW1510 - checked below
        [*FELUND, "send", "--circle-id", node.circle_id, "--stdin"],
        input="\n".join(lines).encode() + b"\n",
        capture_output=True,
        env=node.env,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()


class _Events:
    """A node's bus events, seen from the test: every wait is on an event, with a deadline."""

    def __init__(self, node: Node, *topics: str) -> None:
        ctx = load_context(node.env)
        self.bus = Bus(ctx.layout, "test-relay-sync", ctx.config.bus)
        self.sub = self.bus.subscriber(*topics)

    def wait(self, check: Any, what: str, timeout: float = 60) -> dict[str, Any]:
        """The body of the next event for which ``check(frame)`` is true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.sub.recv(200)
            if got is not None and isinstance(got.frame.body, dict) and check(got.frame):
                body: dict[str, Any] = got.frame.body
                return body
        raise AssertionError(f"no {what} within {timeout:g} s")

    def beat(self, check: Any, what: str, timeout: float = 60) -> dict[str, Any]:
        """The next relay-sync heartbeat for which ``check(body)`` is true."""

        def relay_sync(frame: Frame) -> bool:
            return (
                frame.topic == TOPIC_HEARTBEAT
                and frame.header.src == SVC_RELAY_SYNC
                and bool(check(frame.body))
            )

        return self.wait(relay_sync, what, timeout)

    def stored(self, text: str, what: str) -> None:
        """Wait for the store to announce a message of ``text``."""

        def has(frame: Frame) -> bool:
            return (
                frame.topic == TOPIC_MSG_STORED
                and frame.header.src == SVC_STORE
                and any(m.get("text") == text for m in frame.body.get("msgs", []))
            )

        self.wait(has, what)

    def close(self) -> None:
        self.bus.close()


def _gets(relay: Relay) -> int:
    """GET /v1/messages answered so far (every node's pulls)."""
    return sum(e["method"] == "GET" for e in relay.requests("/v1/messages"))


def _relay_metric(relay: Relay, name: str) -> float:
    with urllib.request.urlopen(f"{relay.url}/metrics", timeout=5) as resp:
        return metric_value(resp.read().decode(), name) or 0.0


def test_nodes_that_cannot_reach_each_other_converge_through_the_relay(pair, relay) -> None:
    a, b = pair
    for n in (a, b):
        assert n.status()["services"][SVC_RELAY_SYNC]["state"] == "running"
    a.cli("send", "--circle-id", a.circle_id, "from a")
    b.cli("send", "--circle-id", b.circle_id, "from b")
    want = ["from a", "from b"]
    for n in (a, b):
        _wait_holding(n, want, timeout=30)
    # Presence: each learned the other's (unreachable) gossip address from the relay.
    b_port = b.env["FELUND_GOSSIP_PORT"]
    wait_for(
        lambda: any(p["addr"] == f"{UNREACHABLE_HOST}:{b_port}" for p in a.json("peers")),
        what="a to learn b's address from the relay",
    )
    _assert_no_gossip(a, b)
    text = a.metrics()
    for op in ("register", "peers", "push", "pull"):
        assert (metric_value(text, "felund_relay_requests_total", op=op, outcome="ok") or 0) >= 1
    assert (metric_value(text, "felund_relay_last_success_timestamp_seconds") or 0) > 0
    # Our requests are signed; the message calls name the node.
    assert all(e["signed"] for e in relay.requests("/v1/register"))
    # (A pull may come before the first registration has pinned the key: unverifiable then.)
    assert all(e["signed"] for e in relay.requests("/v1/messages")[-4:])
    # A later message arrives without waiting for anything else.
    a.cli("send", "--circle-id", a.circle_id, "later")
    wait_for(lambda: "later" in _texts(b), timeout=15, what="the later message on b")


@pytest.mark.slow
def test_kill_relay_sync_and_relay_mid_sync_loses_and_doubles_nothing(pair, relay) -> None:
    a, b = pair
    from_a = [f"a {i:05d} ✓" for i in range(3000)]
    from_b = [f"b {i:05d}" for i in range(500)]
    pid_before = a.service_pid(SVC_RELAY_SYNC)

    def posts() -> int:
        return sum(
            e["method"] == "POST" and e["status"] == 200 for e in relay.requests("/v1/messages")
        )

    _send_many(a, from_a)
    # SIGKILL A's relay-sync while it pushes (50 messages a request: 60 requests in all).
    wait_for(lambda: posts() >= 3, timeout=30, interval=0.005, what="a's push to begin")
    os.kill(pid_before, signal.SIGKILL)
    posted_at_kill = posts()
    # Then the relay, while B pulls what arrived and A's new relay-sync starts over.
    _send_many(b, from_b)
    failed = [_relay_failures(n) for n in (a, b)]
    relay.kill()
    for n, before in zip((a, b), failed, strict=True):
        wait_for(
            lambda: _relay_failures(n) > before,  # noqa: B023 - called within the iteration
            timeout=30,
            what=f"{n.home.name} to meet the dead relay",
        )
    relay.start()
    want = sorted(from_a + from_b)
    for n in (a, b):
        _wait_holding(n, want, timeout=120)
    # Markers sent now cross after the polls that would have doubled anything.
    markers = ["marker from a", "marker from b"]
    a.cli("send", "--circle-id", a.circle_id, markers[0])
    b.cli("send", "--circle-id", b.circle_id, markers[1])
    for n in (a, b):
        wait_for(
            lambda: set(markers) <= set(_texts(n)),  # noqa: B023 - called within the iteration
            timeout=60,
            what=f"the markers on {n.home.name}",
        )
        assert sorted(_texts(n)) == sorted(want + markers)  # every message, exactly once
    # Restarted (more than once only if a starved machine also missed its heartbeats).
    wait_for(
        lambda: a.status()["services"][SVC_RELAY_SYNC]["state"] == "running",
        what="relay-sync to be running",
    )
    status = a.status()["services"][SVC_RELAY_SYNC]
    assert status["restarts"] >= 1 and status["pid"] != pid_before
    _assert_no_gossip(a, b)
    assert posted_at_kill < len(from_a) // 50, "the kill came after the push had finished"


def _post_as_browser(relay: Relay, secret: str, circle_id: str, text: str) -> None:
    """POST one message as the existing browser client does: unsigned."""
    now = int(time.time())
    browser = "browser" + "0" * 17
    msg = compose_message(
        secret,
        circle_id=circle_id,
        channel_id="general",
        author_node_id=browser,
        display_name="web",
        text=text,
        created_ts=now,
        msg_id=ids.new_msg_id(browser, now),
        encrypt=True,
    )
    hint = ids.circle_hint(circle_id)
    body = json.dumps({"circle_hint": hint, "messages": [to_wire(msg)]}).encode()
    req = urllib.request.Request(
        f"{relay.url}/v1/messages", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.loads(resp.read())["stored"] == 1


def test_a_browser_client_and_the_node_see_each_others_messages(make_node, relay) -> None:
    """The existing browser client: unsigned POST and GET ``since`` on /v1/messages."""
    node = _node(make_node, "n", relay)
    invite = node.json("invite")  # creates the circle
    node.circle_id = invite["circle_id"]
    secret = decode_invite(invite["code"]).secret
    hint = ids.circle_hint(node.circle_id)
    node.start()
    node.cli("send", "--circle-id", node.circle_id, "from the node")
    _post_as_browser(relay, secret, node.circle_id, "from the browser")
    _wait_holding(node, ["from the browser", "from the node"], timeout=30)

    def browser_sees() -> list[str]:
        url = f"{relay.url}/v1/messages?circle_hint={hint}&since=0&limit=200"
        with urllib.request.urlopen(url, timeout=5) as resp:
            got = json.loads(resp.read())["messages"]
        # Whole, with its authenticator: the browser can open it, and gossip it on.
        return [open_message(secret, node.circle_id, parse_message(m)).text for m in got]

    wait_for(lambda: "from the node" in browser_sees(), what="the node's message at the relay")


def test_a_node_without_a_relay_takes_the_relay_of_a_browser_circle(make_node, relay) -> None:
    node = make_node(
        "n", FELUND_RELAY_POLL_INTERVAL_S="0.5", FELUND_SUPERVISOR_BACKOFF_INITIAL_S="0.2"
    )
    node.cli("init", "--bind", "127.0.0.1", "--name", "n")
    node.start()
    assert SVC_RELAY_SYNC not in node.status()["services"]
    # A circle made in a browser: its code names the relay, where its messages are.
    secret = ids.new_secret()
    node.circle_id = ids.circle_id(secret)
    body = {
        "circle_hint": ids.circle_hint(node.circle_id),
        "messages": [wire_message(secret, "browser" + "0" * 17, "from the browser")],
    }
    req = urllib.request.Request(
        f"{relay.url}/v1/messages",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.loads(resp.read())["stored"] == 1
    joined = node.cli("join", "--code", encode_invite(secret, relay.url))
    assert f"the relay {relay.url}" in joined.stderr
    _wait_holding(node, ["from the browser"], timeout=30)
    # It pulled before its first heartbeat, maybe: "starting" until then.
    wait_for(
        lambda: node.status()["services"][SVC_RELAY_SYNC]["state"] == "running",
        what="relay-sync to heartbeat",
    )
    node.cli("send", "--circle-id", node.circle_id, "from the node")
    wait_for(
        lambda: any(
            e["status"] == 200
            for e in relay.requests("/v1/messages")
            if e["method"] == "POST" and e["signed"]
        ),
        what="the node's message pushed to the relay",
    )


def test_api_base_sets_the_relay_url(make_node, relay) -> None:
    plain = make_node("plain")
    plain.cli("init", "--bind", "127.0.0.1")
    plain.start()
    assert SVC_RELAY_SYNC not in plain.status()["services"]
    node = make_node("api", FELUND_API_BASE=relay.url)
    node.cli("init", "--bind", "127.0.0.1")
    node.cli("invite")  # a circle to register
    node.start()
    assert node.status()["services"][SVC_RELAY_SYNC]["state"] == "running"
    wait_for(
        lambda: any(e["status"] == 200 for e in relay.requests("/v1/register")),
        what="the node to register at the FELUND_API_BASE relay",
    )


def test_a_clean_stop_and_a_left_circle_unregister_at_once(make_node, relay) -> None:
    node = _node(make_node, "n", relay)
    kept = node.json("invite", "--name", "kept")["circle_id"]
    left = node.json("invite", "--name", "left")["circle_id"]
    node.start()

    def deletes() -> list[str]:
        return [
            e["circle_hint"]
            for e in relay.requests("/v1/register")
            if e["method"] == "DELETE" and e["status"] == 200
        ]

    wait_for(
        lambda: len([e for e in relay.requests("/v1/register") if e["status"] == 200]) >= 2,
        what="both circles registered",
    )
    assert deletes() == []
    node.cli("circle", "leave", "--circle-id", left)
    wait_for(lambda: deletes() == [ids.circle_hint(left)], what="the left circle unregistered")
    node.stop()
    assert sorted(deletes()) == sorted([ids.circle_hint(left), ids.circle_hint(kept)])


def test_the_feed_s_messages_are_stored_as_they_come_and_a_get_only_fills_a_gap(
    pair, relay
) -> None:
    a, b = pair
    events = _Events(b, TOPIC_HEARTBEAT, TOPIC_MSG_STORED)
    on_a = _Events(a, TOPIC_HEARTBEAT)
    try:
        for n, e in ((a, on_a), (b, events)):
            # Two beats with the feed up: the GET made when it connected is behind us.
            for _ in range(2):
                e.beat(lambda body: body["feeds"] == 1, f"{n.home.name}'s feed up")
        gets = _gets(relay)
        for i in range(10):
            a.cli("send", "--circle-id", a.circle_id, f"fed {i}")
            events.stored(f"fed {i}", f"'fed {i}' on b")
        assert _gets(relay) == gets  # each came in a frame of the feed, and was stored from it

        # A message the relay stored and the feed never showed b (posted as b: the relay
        # leaves the poster out) is fetched once the next frame's span jumps past it.
        secret = decode_invite(a.cli("invite", "--circle-id", a.circle_id).stdout.strip()).secret
        hidden = wire_message(secret, "web" + "0" * 21, "never in b's feed")
        body = json.dumps(
            {"circle_hint": ids.circle_hint(a.circle_id), "messages": [hidden]}
        ).encode()
        key = crypto.api_signing_key(secret)
        headers = signed_headers(key, b.status()["node_id"], "POST", "/messages", body)
        req = urllib.request.Request(
            f"{relay.url}/v1/messages",
            data=body,
            headers={"Content-Type": "application/json", **headers},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read())["stored"] == 1
        a.cli("send", "--circle-id", a.circle_id, "after the gap")
        events.stored("never in b's feed", "the message fetched to fill the gap")
        assert "after the gap" in _texts(b)
        # One GET, by b. A took the hidden one from its feed: its own messages' spans
        # (from its POST answers) left no gap before it.
        assert _gets(relay) == gets + 1
    finally:
        events.close()
        on_a.close()
    _assert_no_gossip(a, b)


CIRCLES = 20
HISTORY = 250


def test_a_new_circle_s_push_reads_that_circle_not_the_node_s_history(make_node, relay) -> None:
    node = _node(make_node, "n", relay)
    # A node with a long history in 20 circles, written as the offline CLI writes it.
    ctx = load_context(node.env)
    db = Database(ctx.layout.database)
    ops = Ops(db, NodeInfo(ctx.node_id, "n", False, ""))
    now = int(time.time())
    for i in range(CIRCLES):
        with db.transaction():
            circle = ops.handle(OP_CIRCLE_CREATE, {"name": f"c{i}"}).reply["circle_id"]
            msgs = [
                {"msg_id": ids.new_msg_id(ctx.node_id, now), "created_ts": now, "text": f"{j}"}
                for j in range(HISTORY)
            ]
            ops.handle(OP_POST, {"circle_id": circle, "msgs": msgs})
    db.close()
    node.start()
    total = CIRCLES * HISTORY
    wait_for(
        lambda: _relay_metric(relay, "felund_relay_server_messages_stored_total") >= total,
        timeout=180,
        interval=0.5,
        what="the whole history pushed to the relay",
    )

    def rows_read() -> float:
        text = node.metrics()
        return sum(
            metric_value(text, "felund_store_snapshot_rows_total", scope=scope) or 0
            for scope in ("all", "circle")
        )

    first = rows_read()
    # Each circle read its own history once (and gossip, catching up, the log once).
    assert total <= first < 2.5 * total
    # A circle joined now: its push starts from nothing, and reads nothing of the others.
    invite = node.json("invite", "--name", "new")
    node.cli("send", "--circle-id", invite["circle_id"], "in the new circle")
    secret = decode_invite(invite["code"]).secret
    hint = ids.circle_hint(invite["circle_id"])

    def at_relay() -> bool:
        url = f"{relay.url}/v1/messages?circle_hint={hint}&cursor=0&limit=500"
        with urllib.request.urlopen(url, timeout=5) as resp:
            got = json.loads(resp.read())["messages"]
        texts = [open_message(secret, invite["circle_id"], parse_message(m)).text for m in got]
        return "in the new circle" in texts

    wait_for(at_relay, timeout=60, interval=0.2, what="the new circle's message at the relay")
    assert rows_read() - first < 50, "the new circle's push paged through the node's history"


def test_the_heartbeat_says_per_circle_whether_the_relay_is_reachable(make_node, relay) -> None:
    node = _node(make_node, "n", relay)
    invite = node.json("invite")
    circle = invite["circle_id"]
    started = time.time()
    node.start()
    events = _Events(node, TOPIC_HEARTBEAT)

    def of_circle(check: Any) -> Any:
        return lambda body: circle in body["connectivity"] and check(body["connectivity"][circle])

    try:
        up = events.beat(of_circle(lambda c: c["reachable"] and c["feed"]), "the relay reached")
        link = up["connectivity"][circle]
        assert link["last_ok_ts"] >= started - 1 and link["error_since"] is None
        assert link["last_error"] == ""
        # The circle's first messages (its owner's proof, the node's key) may have crossed.
        assert link["last_message_ts"] is None or link["last_message_ts"] >= started - 1
        relay.kill()
        down = events.beat(of_circle(lambda c: not c["reachable"]), "the relay unreachable")
        link = down["connectivity"][circle]
        assert link["last_error"].startswith("unreachable") and not link["feed"]
        assert link["error_since"] >= up["connectivity"][circle]["last_ok_ts"]
        # Short, and without a secret or a key.
        secret = decode_invite(invite["code"]).secret
        text = json.dumps(down["connectivity"])
        assert secret not in text and crypto.api_signing_key(secret) not in text
        # `felund status` says it too (the supervisor keeps the last report), per circle.
        wait_for(
            lambda: node.json("status")["circles"][0].get("relay", {}).get("reachable") is False,
            what="status to say the relay is unreachable",
        )
        shown = node.cli("status").stdout
        assert "relay unreachable since " in shown and ": unreachable" in shown, shown
        node.cli("send", "--circle-id", circle, "while the relay was down")
        relay.start()
        back = events.beat(
            of_circle(lambda c: c["reachable"] and c["last_message_ts"] is not None),
            "the relay back, and the message pushed",
        )
        link = back["connectivity"][circle]
        assert link["last_error"] == "" and link["error_since"] is None
        wait_for(
            lambda: "relay reachable, feed up; last message " in node.cli("status").stdout,
            what="status to say the relay is reachable again",
        )
        assert link["last_message_ts"] >= down["connectivity"][circle]["error_since"]
    finally:
        events.close()


def test_a_relay_url_ending_in_v1_is_refused_with_the_right_form(make_node, relay) -> None:
    node = make_node("n")
    node.cli("init", "--bind", "127.0.0.1", "--name", "n")
    refused = node.cli("relay", "url", f"{relay.url}/v1", check=False)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().endswith(f"use {relay.url}")
    assert node.cli("relay", "url").stdout.strip() == ""
    node.env["FELUND_RELAY_URL"] = f"{relay.url}/v1/"
    check = node.cli("config", "check", check=False)
    assert check.returncode == 2 and f"use {relay.url}" in check.stderr, check.stderr


class _RelayServing(http.server.BaseHTTPRequestHandler):
    """Another implementation's relay, answering whatever page it was given as is."""

    page = b""

    def _answer(self, body: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith("/v1/messages"):
            first = "cursor=0" in self.path
            page = self.page if first else b'{"ok":true,"messages":[],"next_cursor":3}'
            self._answer(page)
        elif self.path.startswith("/v1/peers"):
            self._answer(b'{"ok":true,"peers":[]}')
        else:
            self._answer(b'{"ok":false,"code":"NOT_FOUND"}', 404)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer(b'{"ok":true,"stored":0,"server_time":0,"expires_at":0}')

    def log_message(self, *args: Any) -> None:
        pass


def test_a_message_that_cannot_cross_the_bus_is_refused_and_the_rest_pulled(make_node) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RelayServing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        node = make_node(
            "n",
            FELUND_RELAY_URL=f"http://127.0.0.1:{server.server_address[1]}",
            FELUND_RELAY_POLL_INTERVAL_S="0.5",
        )
        node.cli("init", "--bind", "127.0.0.1", "--name", "n")
        invite = node.json("invite")
        node.circle_id = invite["circle_id"]
        secret = decode_invite(invite["code"]).secret
        now = int(time.time())
        good = []
        for i, text in enumerate(("before", "after")):
            msg = compose_message(
                secret,
                circle_id=node.circle_id,
                channel_id="general",
                author_node_id="web" + "0" * 21,
                display_name="web",
                text=text,
                created_ts=now + i,
                msg_id=ids.new_msg_id("web", now + i),
                encrypt=False,
            )
            good.append(json.dumps(to_wire(msg)))
        # A lone surrogate as a JSON escape: valid JSON, and no string the bus can carry.
        poison = good[0].replace('"before"', '"\\ud800"')
        poison = poison.replace(json.loads(good[0])["msg_id"], "e" * 32)
        page = f'{{"ok":true,"messages":[{good[0]},{poison},{good[1]}],"next_cursor":3}}'
        _RelayServing.page = page.encode()
        node.start()
        _wait_holding(node, ["after", "before"], timeout=30)
        assert node.status()["services"][SVC_RELAY_SYNC]["restarts"] == 0
        text = node.metrics()
        assert metric_value(text, "felund_bad_input_total", source="relay", kind="format") == 1
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))


def test_messages_the_relay_removed_before_the_node_read_them_are_shown_in_status(
    make_node, tmp_path
) -> None:
    # A relay keeping messages 3 s: the node, stopped meanwhile, comes back with a
    # cursor from before what the relay removed. It says so, not a silent gap.
    relay = Relay(tmp_path / "relay", "--retention-days", "0.000035", "--purge-interval", "0.2")
    relay.start()
    try:
        started = next(line for line in relay.log_text().splitlines() if "relay.starting" in line)
        said = json.loads(started)
        assert (said["retention_s"], said["purge_interval_s"]) == (3, 0.2)
        node = _node(make_node, "n", relay)
        invite = node.json("invite")
        node.circle_id = invite["circle_id"]
        secret = decode_invite(invite["code"]).secret
        node.start()
        _post_as_browser(relay, secret, node.circle_id, "read in time")
        _wait_holding(node, ["read in time"], timeout=30)
        assert node.stop() == 0
        _post_as_browser(relay, secret, node.circle_id, "removed unread")
        hint = ids.circle_hint(node.circle_id)

        def removed() -> bool:
            url = f"{relay.url}/v1/messages?circle_hint={hint}&since=1"
            with urllib.request.urlopen(url, timeout=5) as resp:
                page = json.loads(resp.read())
            return page.get("expired") is True and not page["messages"]

        wait_for(removed, what="the relay to remove both messages")
        node.start()

        def reported() -> float | None:
            circle = node.status()["circles"][0]
            return circle.get("relay", {}).get("history_expired_ts")

        wait_for(reported, what="relay-sync to report what the relay removed unread")
        line = node.cli("status").stdout
        assert "the relay had removed messages (its retention) before this node read them" in line
        assert _texts(node) == ["read in time"]
    finally:
        relay.stop()
