"""A call mixed with the other client (issue 17), against its wire as addendum §1 states it.

The other client (the v1 web) is not available here, so this file builds its frames
from the spec, with nothing of ours: its CALL_EVT texts (§1.2: its keys, in its order,
compact, raw UTF-8, §0.1), carried as it carries them (the enc-only envelope, unsigned
``POST /v1/messages``, §0.3), and its receiver's rules (§1.3, the web column) to check
what we write. The node takes a v1 web's call from the relay like any control event;
the page's side (it writes and signals) is tests/e2e/test_web_call_v1.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from felund.testing import Node, Relay, wait_for
from felund.testing.nodes import metric_value
from felund.v1.invite import decode_invite

CONTROL = "__control"


def v1_node_id() -> str:
    """A v1 web node id: 32 random lowercase hex."""
    return secrets.token_hex(16)


def v1_call_event(op: str, me: str, session_id: str, **kw: Any) -> dict[str, Any]:
    """A CALL_EVT as the v1 web writes it (§1.2: these keys, in this order; own id last)."""
    event: dict[str, Any] = {"t": "CALL_EVT", "op": op, "session_id": session_id}
    if op == "create":
        event |= {"host_node_id": me, "circle_id": kw["circle_id"]}
        event |= {"channel_id": kw["channel_id"], "created_ts": kw["created_ts"]}
    elif op == "end":
        event["host_node_id"] = me
    elif op == "revoke":
        event["target_node_id"] = kw["target"]
    else:
        event["node_id"] = me
        if op == "leave":
            event["reason"] = "user_left"
    event["actor_node_id"] = me
    return event


def v1_text(obj: dict[str, Any]) -> str:
    """JSON.stringify: compact, keys as inserted, non-ASCII raw (§0.1)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _cipher(secret: str) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"felund-msg-v1")
    return AESGCM(hkdf.derive(bytes.fromhex(secret)))


def _ad(m: dict[str, Any]) -> bytes:
    fields = ("msg_id", "circle_id", "channel_id", "author_node_id", "created_ts")
    return "|".join(str(m[k]) for k in fields).encode()


def v1_envelope(
    secret: str, circle_id: str, author: str, text: str, created_ts: int, *, name: str = "web"
) -> dict[str, Any]:
    """A control message as the v1 web posts it: enc only, no mac, no signature (§0.1)."""
    msg_id = hashlib.sha256(f"{author}|{created_ts}|{secrets.token_hex(8)}".encode()).hexdigest()
    env: dict[str, Any] = {"msg_id": msg_id[:32], "circle_id": circle_id, "channel_id": CONTROL}
    env |= {"author_node_id": author, "created_ts": created_ts}
    nonce = os.urandom(12)
    plain = v1_text({"display_name": name, "text": text}).encode()
    sealed = _cipher(secret).encrypt(nonce, plain, _ad(env))
    env["enc"] = {
        "alg": "AES-256-GCM",
        "key_id": "epoch-0",
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    return env


def v1_open(secret: str, wire: dict[str, Any]) -> dict[str, Any]:
    """What a v1 web reads of a message: its enc opened (AES-GCM over the v1 AD)."""
    enc = wire["enc"]
    assert (enc["alg"], enc["key_id"]) == ("AES-256-GCM", "epoch-0"), enc
    nonce, sealed = base64.b64decode(enc["nonce"]), base64.b64decode(enc["ciphertext"])
    plain: dict[str, Any] = json.loads(_cipher(secret).decrypt(nonce, sealed, _ad(wire)))
    return plain


def v1_apply(table: dict[str, dict[str, Any]], event: dict[str, Any], now: int) -> None:
    """The v1 web's receiver (§1.3, the web column): applies one CALL_EVT to its call table."""
    sid = event.get("session_id")
    if not isinstance(sid, str) or not sid.strip():
        return
    op = event.get("op")
    if op == "create":
        if sid in table:
            return
        host = event["host_node_id"] if "host_node_id" in event else event.get("actor_node_id")
        channel = event.get("channel_id")
        ts = event.get("created_ts")
        table[sid] = {
            "host": host,
            "channel_id": channel.strip()
            if isinstance(channel, str) and channel.strip()
            else "general",
            "created_ts": ts if isinstance(ts, int | float) else now,
            "participants": {host},
            "viewers": set(),
        }
        return
    call = table.get(sid)
    if call is None:
        return
    node = event["node_id"] if "node_id" in event else event.get("actor_node_id")
    if op == "join" and node:
        call["participants"].add(node)
    elif op == "view" and node:
        call["viewers"].add(node)
    elif op == "leave":
        call["participants"].discard(node)
        call["viewers"].discard(node)
    elif op == "end":
        who = event["host_node_id"] if "host_node_id" in event else event.get("actor_node_id")
        if not who or who == call["host"]:
            del table[sid]
    elif op == "revoke":
        actor, target = event.get("actor_node_id"), event.get("target_node_id")
        if (not actor or actor == call["host"]) and target:
            call["participants"].discard(target)
            call["viewers"].discard(target)


def v1_post(relay_url: str, circle_hint: str, messages: list[dict[str, Any]]) -> None:
    """The v1 web's push: unsigned POST /v1/messages."""
    body = json.dumps({"circle_hint": circle_hint, "messages": messages}).encode()
    req = urllib.request.Request(
        f"{relay_url}/v1/messages", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["ok"] is True


def test_a_v1_web_call_from_the_relay_runs_and_ends_on_the_node(
    make_node: Callable[..., Node], relay: Relay
) -> None:
    """A v1 web host starts a call, a second v1 web joins and a third watches, all through
    the relay in v1's own form: the node shows the call as the v1 web would hold it; the
    v1 web's forged end (which the v1 web itself takes) changes nothing; the host's end
    ends it."""
    from felund.v1 import ids

    node = make_node(
        "n", FELUND_RELAY_URL=relay.url, FELUND_RELAY_POLL_INTERVAL_S="0.5",
        FELUND_SUPERVISOR_BACKOFF_INITIAL_S="0.2",
    )  # fmt: skip
    node.cli("init", "--bind", "127.0.0.1", "--name", "n")
    invite = node.json("invite")
    circle, secret = invite["circle_id"], decode_invite(invite["code"]).secret
    hint = ids.circle_hint(circle)
    node.start()
    host, guest, viewer = v1_node_id(), v1_node_id(), v1_node_id()
    sid = secrets.token_hex(16)
    now = int(time.time())
    v1_table: dict[str, dict[str, Any]] = {}

    def post(author: str, event: dict[str, Any], name: str) -> None:
        v1_apply(v1_table, event, now)
        v1_post(
            relay.url, hint, [v1_envelope(secret, circle, author, v1_text(event), now, name=name)]
        )

    def on_node() -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = node.json("calls", "--circle-id", circle)["calls"]
        return calls

    create = v1_call_event(
        "create", host, sid, circle_id=circle, channel_id="général", created_ts=now
    )
    post(host, create, "höst")
    post(guest, v1_call_event("join", guest, sid), "guest")
    post(viewer, v1_call_event("view", viewer, sid), "viewer")
    want = v1_table[sid]
    wait_for(
        lambda: (
            [(c["participants"], c["viewers"]) for c in on_node()]
            == [(sorted(want["participants"]), sorted(want["viewers"]))]
        ),
        timeout=60,
        what="the v1 web's call on the node",
    )
    (call,) = on_node()
    assert (call["host"], call["channel_id"], call["created_ts"], call["state"]) == (
        host, "général", now, "active",
    )  # fmt: skip
    words = node.cli("calls", "--circle-id", circle).stdout
    assert "call in #général, started by höst, 2 in it, 1 watching" in words

    # The guest ends it naming the host: the v1 web takes this (§1.3 table), we do not.
    forged = {"t": "CALL_EVT", "op": "end", "session_id": sid, "host_node_id": host}
    v1_post(relay.url, hint, [v1_envelope(secret, circle, guest, v1_text(forged), now)])

    def refused(kind: str) -> float:
        found = metric_value(node.metrics(), "felund_bad_input_total", source="call", kind=kind)
        return found or 0

    wait_for(lambda: refused("actor_mismatch") == 1, timeout=60, what="the forged end refused")
    assert on_node() == [call]

    # The viewer leaves, the host ends: as the v1 web would hold it, nothing.
    post(viewer, v1_call_event("leave", viewer, sid), "viewer")
    post(host, v1_call_event("end", host, sid), "höst")
    assert v1_table == {}
    wait_for(lambda: on_node() == [], timeout=60, what="no call on the node after the v1 end")
