"""A re-keyed circle at a real relay (`felund relay serve` on 127.0.0.1): a realm succeeds another.

The new epoch's key registers with ``succeeds`` (the old key's id and an HMAC
under the old key); from then on the two realms share one room, the old key
reads but no longer posts, and an unsigned post is refused, with
``--require-signatures`` or without. A proof that does not verify, or names a
key the relay never saw, is refused with its own code. Last, real nodes that
only the relay connects: relay-sync follows a re-key into the new realm.
"""

from __future__ import annotations

import functools
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from felund.protocol import OP_CIRCLE_KEYS, OP_WHO
from felund.relay.auth import key_id, succeeds_field
from felund.relay.client import signed_headers
from felund.relay.protocol import (
    BAD_SUCCESSION,
    EPOCH_ENDED,
    EPOCH_KEY_REQUIRED,
    MAX_NODE_KEYS,
    SIGNATURE_REQUIRED,
    UNKNOWN_PREDECESSOR,
)
from felund.testing import Node, Relay, wait_for, wire_message
from felund.v1 import crypto, ids
from felund.v1.invite import decode_invite

NODE, OTHER = "epochnode0001", "epochnode0002"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(params=["open", "require", "require-postgresql"])
def relay(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Relay]:
    """A relay without, then with, --require-signatures (and so on PostgreSQL too)."""
    args = ("--require-signatures",) if request.param.startswith("require") else ()
    db = request.getfixturevalue("pg_server").database() if "postgresql" in request.param else ""
    server = Relay(tmp_path / "relay", *args, db=db)
    server.start()
    yield server
    server.stop()


def call(
    relay: Relay, key: str | None, method: str, path: str, body: Any = None, *, node: str = NODE
) -> tuple[int, dict[str, Any]]:
    """One call (``path`` after /v1), signed with ``key`` unless None: (status, answer)."""
    raw = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "X-Real-IP": "10.9.0.1"}
    if key is not None:
        headers |= signed_headers(key, node, method, path.partition("?")[0], raw)
    request = urllib.request.Request(
        f"{relay.url}/v1{path}", data=raw or None, method=method, headers=headers
    )
    try:
        with _NO_PROXY.open(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Circle:
    """A circle's root secret and its epochs' signing keys, as every member derives them."""

    def __init__(self) -> None:
        self.secret = ids.new_secret()
        self.hint = ids.circle_hint(ids.circle_id(self.secret))
        self.keys = [crypto.api_signing_key(self.secret)]

    def rekey(self) -> str:
        """A new epoch's key (a fresh secret's)."""
        self.keys.append(crypto.api_signing_key(ids.new_secret()))
        return self.keys[-1]

    def register(
        self, relay: Relay, key: str, node: str = NODE, succeeds: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {
            "node_id": node,
            "circle_hint": self.hint,
            "endpoints": [],
            "ttl_s": 60,
            "signing_key": key,
        }
        if succeeds is not None:
            body["succeeds"] = succeeds
        return call(relay, key, "POST", "/register", body, node=node)

    def post(self, relay: Relay, key: str | None, text: str) -> tuple[int, dict[str, Any]]:
        msg = wire_message(self.secret, NODE, text)
        return call(relay, key, "POST", "/messages", {"circle_hint": self.hint, "messages": [msg]})

    def read(self, relay: Relay, key: str) -> list[str]:
        status, answer = call(relay, key, "GET", f"/messages?circle_hint={self.hint}&since=0")
        assert status == 200, answer
        return [m["msg_id"] for m in answer["messages"]]

    def signal(self, relay: Relay, key: str | None) -> tuple[int, dict[str, Any]]:
        body = {
            "session_id": "session-0001",
            "from_node_id": NODE,
            "to_node_id": OTHER,
            "circle_hint": self.hint,
            "type": "offer",
            "payload": "sdp",
            "ttl_s": 30,
        }
        return call(relay, key, "POST", "/signal", body)


def _succeeded(relay: Relay, circle: Circle) -> tuple[str, str]:
    """Register the old key, then the new one succeeding it; (old, new)."""
    old = circle.keys[-1]
    assert circle.register(relay, old)[0] == 200
    new = circle.rekey()
    status, answer = circle.register(relay, new, succeeds=succeeds_field(new, old))
    assert status == 200, answer
    return old, new


def test_after_a_succession_the_old_key_reads_and_no_longer_posts(relay: Relay) -> None:
    circle = Circle()
    old = circle.keys[0]
    assert circle.register(relay, old)[0] == 200
    status, before = circle.post(relay, old, "before the re-key")
    assert status == 200, before  # the path is live: the old key posted until now
    assert circle.signal(relay, old)[0] == 200
    _, new = _succeeded(relay, circle)

    status, after = circle.post(relay, new, "under the new key")
    assert status == 200 and after["stored"] == 1, after
    status, refused = circle.post(relay, old, "from a removed member")
    assert (status, refused["code"]) == (403, EPOCH_ENDED)
    assert "epoch has ended" in refused["message"]
    status, refused = circle.signal(relay, old)
    assert (status, refused["code"]) == (403, EPOCH_ENDED)
    assert circle.signal(relay, new)[0] == 200

    # One room: either key reads both messages (a lagging member catches up).
    assert len(circle.read(relay, old)) == len(circle.read(relay, new)) == 2


def test_an_unsigned_post_to_a_re_keyed_room_is_refused(relay: Relay) -> None:
    circle = Circle()
    open_relay = "--require-signatures" not in relay.args
    if open_relay:  # the path is live: unsigned posts pass until the re-key
        assert circle.post(relay, None, "unsigned, before")[0] == 200
    _succeeded(relay, circle)
    status, refused = circle.post(relay, None, "unsigned, after")
    expected = (403, EPOCH_KEY_REQUIRED) if open_relay else (401, SIGNATURE_REQUIRED)
    assert (status, refused["code"]) == expected
    status, refused = circle.signal(relay, None)
    assert (status, refused["code"]) == expected


def test_a_bad_proof_is_refused_and_ends_nothing(relay: Relay) -> None:
    circle = Circle()
    old = circle.keys[0]
    assert circle.register(relay, old)[0] == 200
    new = circle.rekey()
    forged = {"key_id": key_id(old), "proof": "00" * 32}
    status, refused = circle.register(relay, new, succeeds=forged)
    assert (status, refused["code"]) == (403, BAD_SUCCESSION)
    # A proof made with another key (someone who never held the old one).
    other = crypto.api_signing_key(ids.new_secret())
    status, refused = circle.register(
        relay, new, succeeds={"key_id": key_id(old), "proof": succeeds_field(new, other)["proof"]}
    )
    assert (status, refused["code"]) == (403, BAD_SUCCESSION)
    assert circle.post(relay, old, "the old key still posts")[0] == 200


def test_a_predecessor_the_relay_never_saw_is_named_so(relay: Relay) -> None:
    circle = Circle()
    never = circle.keys[0]  # not registered here
    new = circle.rekey()
    status, refused = circle.register(relay, new, succeeds=succeeds_field(new, never))
    assert (status, refused["code"]) == (409, UNKNOWN_PREDECESSOR)
    # Registered with the old key first (what relay-sync does then), it succeeds.
    assert circle.register(relay, never)[0] == 200
    assert circle.register(relay, new, succeeds=succeeds_field(new, never))[0] == 200


def test_a_chain_of_re_keys_shares_one_room_and_a_node_is_never_out_of_keys(
    relay: Relay,
) -> None:
    """More re-keys than a node may hold keys: the ended ones do not count."""
    circle = Circle()
    posted = 0
    for _ in range(MAX_NODE_KEYS + 2):
        _, new = _succeeded(relay, circle)
        status, answer = circle.post(relay, new, f"epoch {len(circle.keys) - 1}")
        assert status == 200, answer
        posted += 1
    assert len(circle.read(relay, circle.keys[0])) == posted
    assert len(circle.read(relay, circle.keys[-1])) == posted
    for ended in circle.keys[:-1]:
        assert circle.post(relay, ended, "late")[0] == 403


# --- relay-sync following a re-key, between real nodes --------------------------------------


@pytest.fixture
def strict_relay(tmp_path: Path) -> Iterator[Relay]:
    """A relay with --require-signatures: each realm is a room unless a succession joins it."""
    server = Relay(tmp_path / "strict-relay", "--require-signatures")
    server.start()
    yield server
    server.stop()


def _relayed_node(make_node: Callable[..., Node], name: str, relay: Relay) -> Node:
    """A node whose gossip reaches nobody (it advertises 127.0.0.2): only the relay carries."""
    node = make_node(
        name,
        FELUND_RELAY_URL=relay.url,
        FELUND_RELAY_POLL_INTERVAL_S="0.5",
        FELUND_RELAY_REGISTER_INTERVAL_S="2",
        FELUND_GOSSIP_ADVERTISE_HOST="127.0.0.2",
        FELUND_SUPERVISOR_BACKOFF_INITIAL_S="0.2",
    )
    node.cli("init", "--bind", "127.0.0.1", "--name", name)
    return node


def _newest(node: Node, circle: str) -> int:
    for c in node.call(OP_CIRCLE_KEYS)["circles"]:
        if c["circle_id"] == circle:
            return int(c["epochs"][0]["n"])
    return -1


def _texts(node: Node, circle: str) -> set[str]:
    return {m["text"] for m in node.inbox(circle)}


def _has(node: Node, circle: str, text: str) -> bool:
    return text in _texts(node, circle)


def test_relay_sync_moves_to_the_new_epochs_realm_and_the_old_key_is_refused(
    make_node: Callable[..., Node], strict_relay: Relay
) -> None:
    """A removes C in a circle the relay alone carries: A and B go on under the new epoch's
    key (its realm succeeds the old one, so they share the room: B, still on the old key,
    reads the re-key there); C's old key still reads and no longer posts."""
    a, b, c = (_relayed_node(make_node, n, strict_relay) for n in "abc")
    code = a.cli("invite").stdout.strip()
    circle = b.cli("join", "--code", code).stdout.strip()
    c.cli("join", "--code", code)
    for n in (a, b, c):
        n.start()
    a.cli("send", "--circle-id", circle, "before")
    for n in (b, c):
        wait_for(functools.partial(_has, n, circle, "before"), timeout=60, what="the first one")
    root = decode_invite(code).secret
    old_key = crypto.api_signing_key(root)
    hint = ids.circle_hint(circle)

    def everyone_follows(n: Node) -> bool:
        people = n.call(OP_WHO, {"circle_id": circle})["people"]
        return len(people) == 3 and all(p["can_follow"] for p in people)

    # A too: it names c to remove it (waiting on b alone, a did not know c yet once).
    for n in (a, b):
        wait_for(functools.partial(everyone_follows, n), timeout=60, what="everyone's keys")
    a.cli("member", "remove", "c", "--circle-id", circle, "--yes")
    wait_for(lambda: _newest(b, circle) == 1, timeout=60, what="b on epoch 1 through the relay")
    a.cli("send", "--circle-id", circle, "after")
    wait_for(lambda: "after" in _texts(b, circle), timeout=60, what="a's new message on b")
    assert "after" not in _texts(c, circle)
    assert any(e.get("event") == "relay.rekeyed" for e in a.log_events())

    # The relay: the old key reads the room (the new epoch's messages among them), and
    # may no longer post.
    status, answer = call(strict_relay, old_key, "GET", f"/messages?circle_hint={hint}&since=0")
    assert status == 200 and len(answer["messages"]) >= 4  # before, 2 events, after, ...
    msg = wire_message(root, "removed0node", "still here")
    status, refused = call(
        strict_relay, old_key, "POST", "/messages", {"circle_hint": hint, "messages": [msg]}
    )
    assert (status, refused["code"]) == (403, EPOCH_ENDED)
