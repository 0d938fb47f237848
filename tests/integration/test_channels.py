"""Channels, memberships and names between real nodes on 127.0.0.1, and with a v1 peer.

Control events travel as ordinary messages on ``__control``; every node
derives the same channels, members and names from the events it holds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from felund.testing import Node, metric_value, wait_for
from felund.v1.invite import encode_invite
from tests.v1peer import V1Peer, message_mac

CONTROL = "__control"
FAST = {"FELUND_GOSSIP_ROUND_INTERVAL_S": "0.5", "FELUND_SUPERVISOR_BACKOFF_INITIAL_S": "0.2"}


# A key channel v1 members read: not private (a v1 peer in the circle cannot read one).
SHARED_KEY_CHANNEL = ("channel", "create", "ours", "--access", "key", "--key", "k", "--shared")


def _compact(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _started(make_node: Callable[..., Node], name: str, **env: str) -> Node:
    node = make_node(name, **(FAST | env))
    node.cli("init", "--bind", "127.0.0.1", "--name", name)
    return node


def _channels(node: Node, circle: str) -> dict[str, dict[str, Any]]:
    listed = node.json("channels", "--circle-id", circle)
    return {c["channel_id"]: c for c in listed}


def _shared_view(node: Node, circle: str) -> dict[str, Any]:
    """What every node holding the same events must agree on (not `member`/`can_post`)."""
    return {
        cid: {k: c[k] for k in ("access_mode", "creator", "members", "requests")}
        for cid, c in _channels(node, circle).items()
    }


def _modes(node: Node, circle: str) -> dict[str, str]:
    return {cid: c["access_mode"] for cid, c in _channels(node, circle).items()}


def _has_modes(node: Node, circle: str, want: dict[str, str]) -> bool:
    return _modes(node, circle) == want


def _has_name(node: Node, circle: str, node_id: str, name: str) -> bool:
    return _names(node, circle).get(node_id) == name


def _inbox(node: Node, circle: str, *extra: str) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = node.json(
        "inbox", "--circle-id", circle, "--limit", "100000", *extra
    )
    return msgs


def _texts(node: Node, circle: str, channel: str) -> set[str]:
    return {m["text"] for m in _inbox(node, circle, "--channel", channel)}


def _names(node: Node, circle: str) -> dict[str, str]:
    return {p["node_id"]: p["display_name"] for p in node.json("who", "--circle-id", circle)}


def _refused(node: Node, *args: str, says: str = "") -> str:
    """Run a command that must be refused: exit 2 and one line on stderr."""
    proc = node.cli(*args, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert says in proc.stderr, proc.stderr
    return proc.stderr


def _store_restarted(node: Node, times: int) -> bool:
    proc = node.cli("status", "--json", check=False)
    if proc.returncode != 0:
        return False
    store = json.loads(proc.stdout)["services"]["store"]
    return bool(store["restarts"] == times and store["state"] == "running")


def _kill_store(node: Node, restarts: int) -> None:
    os.kill(node.service_pid("store"), signal.SIGKILL)
    wait_for(lambda: _store_restarted(node, restarts), timeout=30, what="the store to restart")


def _bad_control(node: Node, reasons: tuple[str, ...]) -> dict[str, float]:
    text = node.metrics()
    return {
        r: metric_value(text, "felund_bad_input_total", source="control", kind=r) or 0.0
        for r in reasons
    }


# --- three nodes ------------------------------------------------------------------


def test_three_nodes_channels_access_renames_and_restart(make_node) -> None:
    a, b, c = (_started(make_node, n) for n in "abc")
    circle = _join(b, a.cli("invite").stdout.strip())
    # C knows only B: what A writes reaches C through B.
    _join(c, b.cli("invite", "--circle-id", circle).stdout.strip())
    for n in (a, b, c):
        n.start()
    b_id = b.status()["node_id"]

    a.cli("channel", "create", "lobby", "--circle-id", circle)
    a.cli("channel", "create", "vault", "--circle-id", circle, "--access", "key", "--key", "s3")
    a.cli("channel", "create", "club", "--circle-id", circle, "--access", "invite")
    want = {"general": "public", "lobby": "public", "vault": "key", "club": "invite"}
    assert _modes(a, circle) == want
    for n in (b, c):
        _wait(functools.partial(_has_modes, n, circle, want), f"{n.home.name} to see channels")

    # Public: anyone posts without joining.
    c.cli("send", "--circle-id", circle, "--channel", "lobby", "hello lobby")

    # Key channel: refused until joined with the right key.
    send_vault = ("send", "--circle-id", circle, "--channel", "vault", "hello vault")
    _refused(b, *send_vault, says="vault")
    _refused(b, "channel", "join", "vault", "--circle-id", circle, "--key", "guess", says="key")
    _refused(b, "channel", "join", "vault", "--circle-id", circle, says="key")
    _refused(b, *send_vault, says="vault")
    b.cli("channel", "join", "vault", "--circle-id", circle, "--key", "s3")
    b.cli(*send_vault)
    _refused(c, "send", "--circle-id", circle, "--channel", "vault", "c has no key")
    _wait(lambda: "hello vault" in _texts(a, circle, "vault"), "b's post in #vault on a")

    # Invite channel: join refused; request, approve by a member, then post.
    send_club = ("send", "--circle-id", circle, "--channel", "club", "hello club")
    _refused(b, "channel", "join", "club", "--circle-id", circle, says="invitation")
    _refused(b, *send_club, says="club")
    b.cli("channel", "request", "club", "--circle-id", circle)
    _wait(lambda: _channels(a, circle)["club"]["requests"] == [b_id], "b's request on a")
    _refused(
        c, "channel", "approve", "club", "--circle-id", circle, "--node", c.status()["node_id"]
    )
    a.cli("channel", "approve", "club", "--circle-id", circle, "--node", b_id)
    _wait(lambda: _channels(b, circle)["club"]["can_post"], "b's approval on b")
    b.cli(*send_club)
    _wait(lambda: "hello club" in _texts(a, circle, "club"), "b's post in #club on a")
    assert not _channels(c, circle)["club"]["can_post"]

    # Renames propagate: `who` and the names on new messages.
    b.cli("rename", "bea")
    b.cli("send", "--circle-id", circle, "after the rename")
    for n in (a, c):
        _wait(functools.partial(_has_name, n, circle, b_id, "bea"), f"b's name on {n.home.name}")
    _wait(
        lambda: any(
            m["text"] == "after the rename" and m["display_name"] == "bea"
            for m in _inbox(a, circle)
        ),
        "b's message under its new name on a",
    )
    a.cli("circle", "name", "the crew", "--circle-id", circle)
    _wait(lambda: [x["name"] for x in c.json("circles")] == ["the crew"], "the circle's name on c")

    # Same events, same state, on every node.
    _wait(
        lambda: _shared_view(a, circle) == _shared_view(b, circle) == _shared_view(c, circle),
        "the three nodes to agree",
    )
    assert set(_shared_view(a, circle)["vault"]["members"]) == {a.status()["node_id"], b_id}

    # kill -9 right after a channel event: the state is derived again, the same.
    a.cli("channel", "create", "late", "--circle-id", circle, "--access", "invite")
    before = a.json("channels", "--circle-id", circle)
    _kill_store(a, restarts=1)
    assert a.json("channels", "--circle-id", circle) == before
    assert "late" in {ch["channel_id"] for ch in before}
    assert _names(a, circle)[b_id] == "bea"


def _join(node: Node, code: str) -> str:
    return node.cli("join", "--code", code).stdout.strip()


def _wait(check: Callable[[], Any], what: str) -> None:
    wait_for(check, timeout=30, interval=0.1, what=what)


# --- a v1 peer written from the spec ------------------------------------------------


@pytest.fixture
def v1() -> Iterator[V1Peer]:
    peer = V1Peer(secrets.token_hex(32))
    yield peer
    peer.stop()


def _with_v1(make_node: Callable[..., Node], v1: V1Peer) -> tuple[Node, str, str]:
    """Our node, joined to the v1 peer's circle by an invite naming the v1 peer."""
    port = v1.start_server()
    node = _started(make_node, "ours")
    circle = _join(node, encode_invite(v1.secret.hex(), f"127.0.0.1:{port}"))
    assert circle == v1.circle_id
    node.start()
    return node, circle, node.status()["node_id"]


def _v1_control(v1: V1Peer, text: str) -> None:
    v1.post(text, channel_id=CONTROL, display_name="")


def _control_of(v1: V1Peer, author: str, kind: str = "") -> list[tuple[str, int]]:
    """(text, created_ts) of the control messages the v1 peer holds from ``author``
    (``kind``: of that "t" only; our node also announces its key when it joins, and
    a round may bring that before or with what a test waits for)."""
    found = []
    for m in v1.messages():
        if m["channel_id"] == CONTROL and m["author_node_id"] == author:
            plain = v1.plaintext(m["msg_id"])
            assert plain is not None
            if not kind or json.loads(plain[1]).get("t") == kind:
                found.append((plain[1], m["created_ts"]))
    return found


def _key_hash(circle: str, channel: str, key: str) -> str:
    """A channel key's hash as the other implementation computes it (addendum §2.1)."""
    return hashlib.sha256(f"{circle}|{channel}|{key}".encode()).hexdigest()


REASONS = ("not_json", "not_object", "unknown_op", "bad_channel", "too_long", "bad_name")


def test_control_events_interoperate_with_a_v1_peer_and_hostile_ones_change_nothing(
    make_node, v1
) -> None:
    node, circle, our_id = _with_v1(make_node, v1)

    # Ours -> v1: compact, key-sorted JSON, accepted by the v1 peer's checks.
    node.cli(*SHARED_KEY_CHANNEL, "--circle-id", circle)
    ours = _wait_value(
        lambda: _control_of(v1, our_id, "CHANNEL_EVT"), "our channel event on the v1 peer"
    )
    text, created_ts = ours[0]
    body = json.loads(text)
    assert text == _compact(body)
    assert body == {  # the keys the v1 CLI writes (addendum §2.3), the key hashed as §2.1 says
        "t": "CHANNEL_EVT",
        "op": "create",
        "circle_id": circle,
        "channel_id": "ours",
        "access_mode": "key",
        "key_hash": _key_hash(circle, "ours", "k"),
        "actor_node_id": our_id,
        "created_by": our_id,
        "created_ts": created_ts,
    }
    assert not v1.dropped, v1.dropped

    # v1 -> ours: a channel the v1 peer creates, a key join and a rename it writes.
    create = {"actor_node_id": v1.node_id, "channel_id": "v1room", "op": "create"}
    _v1_control(v1, _compact({**create, "t": "CHANNEL_EVT"}))
    join = {"actor_node_id": v1.node_id, "channel_id": "ours", "op": "join", "t": "CHANNEL_EVT"}
    v1.post(
        _compact({**join, "key_hash": _key_hash(circle, "ours", "k")}),
        channel_id=CONTROL,
        display_name="",
        created_ts=created_ts + 1,
    )
    rename = {"actor_node_id": v1.node_id, "op": "rename", "t": "CHANNEL_EVT"}
    _v1_control(v1, _compact({**rename, "display_name": "vee"}))
    _wait(
        lambda: (
            "v1room" in (chans := _channels(node, circle))
            and chans["v1room"]["creator"] == v1.node_id
            and chans["v1room"]["access_mode"] == "public"
            and v1.node_id in chans["ours"]["members"]
            and _names(node, circle).get(v1.node_id) == "vee"
        ),
        "the v1 peer's channel, join and name on our node",
    )
    node.cli("send", "--circle-id", circle, "--channel", "v1room", "into the v1 room")
    _wait(lambda: "into the v1 room" in v1.texts("v1room"), "our post in #v1room on the v1 peer")

    # Hostile control events from a member: counted, ignored, the store keeps running.
    before = node.json("channels", "--circle-id", circle)
    names = _names(node, circle)
    counted = _bad_control(node, REASONS)
    hostile = {
        "{not json": "not_json",
        '["CHANNEL_EVT"]': "not_object",
        _compact({**create, "op": "explode", "t": "CHANNEL_EVT"}): "unknown_op",
        _compact({**create, "channel_id": "Bad Room!", "t": "CHANNEL_EVT"}): "bad_channel",
        _compact({**create, "channel_id": "__sneaky", "t": "CHANNEL_EVT"}): "bad_channel",
        # As big as a v1 message may be (our node refuses texts over 8000 chars).
        _compact({**rename, "display_name": "N" * 7_000}): "too_long",
        _compact({**rename, "display_name": "N" * 4_000}): "bad_name",
        _compact({**rename, "display_name": "line\nbreak"}): "bad_name",
        # The v1 peer forging our node's actions.
        _compact({**join, "channel_id": "v1room", "actor_node_id": our_id, "op": "leave"}): "",
        _compact({"t": "CHANNEL_EVT", "op": "leave", "channel_id": "ours", "node_id": our_id}): "",
    }
    for text in hostile:
        _v1_control(v1, text)
    _wait(lambda: set(hostile) <= _texts(node, circle, CONTROL), "the hostile events on our node")
    assert node.json("channels", "--circle-id", circle) == before
    assert _names(node, circle) == names
    store = node.status()["services"]["store"]
    assert (store["state"], store["restarts"]) == ("running", 0)
    after = _bad_control(node, REASONS)
    for reason in REASONS:
        n = sum(1 for r in hostile.values() if r == reason)
        assert after[reason] - counted[reason] == n, (reason, counted, after)
    mismatch = metric_value(
        node.metrics(), "felund_bad_input_total", source="control", kind="actor_mismatch"
    )
    assert mismatch == 2

    # Our node still writes and reads control events.
    node.cli("channel", "create", "still-fine", "--circle-id", circle)
    assert "still-fine" in _channels(node, circle)

    # kill -9: the same state is derived again, and nothing is counted twice.
    before = node.json("channels", "--circle-id", circle)
    _kill_store(node, restarts=1)
    assert node.json("channels", "--circle-id", circle) == before
    assert _names(node, circle) == names
    assert _bad_control(node, REASONS) == after


def test_control_events_for_another_circle_are_ignored(make_node, v1) -> None:
    node, circle, _ = _with_v1(make_node, v1)
    other = "0" * 24
    events = [
        {"t": "CIRCLE_NAME_EVT", "circle_id": other, "name": "hijacked"},
        {
            "t": "CHANNEL_EVT",
            "op": "create",
            "channel_id": "elsewhere",
            "circle_id": other,
            "actor_node_id": v1.node_id,
        },
    ]
    sentinel = {"t": "CHANNEL_EVT", "op": "create", "channel_id": "here", "circle_id": circle}
    for event in [*events, {**sentinel, "actor_node_id": v1.node_id}]:
        _v1_control(v1, _compact(event))
    _wait(lambda: "here" in _channels(node, circle), "the v1 peer's events on our node")
    channels, names = set(_channels(node, circle)), [c["name"] for c in node.json("circles")]
    assert (channels, names) == ({"general", "here"}, [""])


def _wait_value(check: Callable[[], Any], what: str) -> Any:
    return wait_for(check, timeout=30, interval=0.1, what=what)


def test_a_v1_join_in_the_second_of_the_create_counts(make_node, v1) -> None:
    """A join written after the create it answers, in the same second, makes a member.

    created_ts is in whole seconds and msg_ids are random: ordering control events
    by (created_ts, msg_id) puts such a join before the create half the time, and
    the join is then refused as "no_channel" although its author saw the channel.
    Here the join gets the smallest msg_id, so that this happens every time.
    """
    node, circle, our_id = _with_v1(make_node, v1)
    node.cli(*SHARED_KEY_CHANNEL, "--circle-id", circle)
    ours = _wait_value(
        lambda: _control_of(v1, our_id, "CHANNEL_EVT"), "our channel event on the v1 peer"
    )
    join = {
        "actor_node_id": v1.node_id,
        "channel_id": "ours",
        "key_hash": _key_hash(circle, "ours", "k"),
        "op": "join",
        "t": "CHANNEL_EVT",
    }
    msg: dict[str, Any] = {
        "msg_id": "0" * 32,
        "circle_id": v1.circle_id,
        "channel_id": CONTROL,
        "author_node_id": v1.node_id,
        "display_name": "",
        "created_ts": ours[0][1],
        "text": _compact(join),
        "mac": "",
        "schema_version": 1,
        "enc": None,
    }
    msg["mac"] = message_mac(v1.secret, msg)
    assert v1.receive(msg)
    _wait(lambda: _compact(join) in _texts(node, circle, CONTROL), "the v1 join on our node")
    assert v1.node_id in _channels(node, circle)["ours"]["members"]


# --- issue 13: whom an approve names, key channels and names with a v1 peer -------------


def _control_count(node: Node, circle: str) -> int:
    return len(_inbox(node, circle, "--channel", CONTROL))


def test_a_circle_s_name_travels_and_approve_names_a_person_or_nothing(make_node) -> None:
    """`felund invite --name friends` showed as an id to whoever joined; `channel approve
    --node bob|8bd55a18|totally-bogus-node` said "approve: #vip", exit 0, and stored the
    strings as members. A node is named by full id, unique start or unique name."""
    a, b = _started(make_node, "a"), _started(make_node, "b")
    code = a.cli("invite", "--name", "friends").stdout.strip()
    circle = _join(b, code)
    a.start()
    b.start()
    _wait(lambda: [c["name"] for c in b.json("circles")] == ["friends"], "the name on b")
    b_id = b.status()["node_id"]

    a.cli("channel", "create", "vip", "--circle-id", circle, "--access", "invite")
    a.cli("channel", "create", "vip2", "--circle-id", circle, "--access", "invite")
    _wait(lambda: "vip2" in _channels(b, circle), "the channels on b")
    b.cli("rename", "bob")
    b.cli("channel", "request", "vip", "--circle-id", circle)
    _wait(lambda: _channels(a, circle)["vip"]["requests"] == [b_id], "b's request on a")
    _wait(lambda: _has_name(a, circle, b_id, "bob"), "b's name on a")

    approve = ("channel", "approve", "vip", "--circle-id", circle, "--node")
    before = _control_count(a, circle)
    for who in ("totally-bogus-node", "carol", b_id[:4] + "zz"):
        _refused(a, *approve, who, says=f'no one in this circle is "{who}"')
    _refused(a, *approve, b_id.upper(), says="no one in this circle")
    assert _control_count(a, circle) == before
    assert _channels(a, circle)["vip"]["members"] == [a.status()["node_id"]]

    a.cli(*approve, "bob")
    a.cli("channel", "approve", "vip2", "--circle-id", circle, "--node", b_id[:8])
    _wait(
        lambda: (
            _channels(b, circle)["vip"]["can_post"] and _channels(b, circle)["vip2"]["can_post"]
        ),
        "b approved in #vip and #vip2",
    )
    members = sorted([a.status()["node_id"], b_id])
    assert _channels(a, circle)["vip"]["members"] == members
    assert _channels(a, circle)["vip2"]["members"] == members


def test_key_channels_and_names_work_with_a_v1_peer_both_ways(make_node, v1) -> None:
    """The other implementation hashes a key as circle|channel|key (addendum §2.1), its TUI
    makes key channels with an empty hash (§2.2), its browser names circles without
    circle_id (§3.1), its CLI joins without key_hash (§2.3)."""
    node, circle, our_id = _with_v1(make_node, v1)
    v1_cli = {"t": "CHANNEL_EVT", "circle_id": circle, "actor_node_id": v1.node_id}
    create = {**v1_cli, "op": "create", "created_by": v1.node_id, "created_ts": 0}
    _v1_control(
        v1,
        _compact(
            {
                **create,
                "channel_id": "vault",
                "access_mode": "key",
                "key_hash": _key_hash(circle, "vault", "sesame"),
            }
        ),
    )
    _v1_control(
        v1, _compact({**create, "channel_id": "tuiroom", "access_mode": "key", "key_hash": ""})
    )
    _v1_control(v1, _compact({"t": "CIRCLE_NAME_EVT", "name": "from a v1 browser"}))
    _wait(
        lambda: (
            {"vault", "tuiroom"} <= set(_channels(node, circle))
            and [c["name"] for c in node.json("circles")] == ["from a v1 browser"]
        ),
        "the v1 peer's channels and circle name on our node",
    )
    assert _modes(node, circle) == {"general": "public", "vault": "key", "tuiroom": "key"}

    join = ("channel", "join", "vault", "--circle-id", circle)
    _refused(node, *join, says="that channel has a key")
    _refused(node, *join, "--key", "Sesame", says="wrong key")
    node.cli(*join, "--key", "sesame")
    node.cli("channel", "join", "tuiroom", "--circle-id", circle)
    assert our_id in _channels(node, circle)["vault"]["members"]
    assert our_id in _channels(node, circle)["tuiroom"]["members"]

    # Ours -> v1: the hash it checks a typed key against, and the name its node reads.
    node.cli(*SHARED_KEY_CHANNEL, "--circle-id", circle)
    node.cli("circle", "name", "renamed", "--circle-id", circle)

    def ours() -> dict[str, Any] | None:
        sent = {json.loads(t)["t"]: json.loads(t) for t, _ in _control_of(v1, our_id)}
        return sent if "CIRCLE_NAME_EVT" in sent else None

    sent = _wait_value(ours, "our events on the v1 peer")
    assert sent["CIRCLE_NAME_EVT"] == {
        "t": "CIRCLE_NAME_EVT",
        "circle_id": circle,
        "name": "renamed",
    }
    created = [json.loads(t) for t, _ in _control_of(v1, our_id) if '"create"' in t]
    assert [e["key_hash"] for e in created if e["channel_id"] == "ours"] == [
        _key_hash(circle, "ours", "k")
    ]
    # Its CLI checked the key itself and sends a join without key_hash, naming itself in node_id.
    _v1_control(
        v1,
        _compact(
            {**v1_cli, "op": "join", "channel_id": "ours", "node_id": v1.node_id, "created_ts": 0}
        ),
    )
    _wait(
        lambda: v1.node_id in _channels(node, circle)["ours"]["members"], "the v1 join on our node"
    )


def test_events_dated_far_ahead_lock_nothing(make_node, v1) -> None:
    """Issue 14: a member's rename dated 2**41-1 made channel create/join, rename and circle
    name fail on every node (`msgs[0]: size: created_ts`); a circle name at 2**41-2 renamed
    the circle everywhere."""
    node, circle, our_id = _with_v1(make_node, v1)
    node.cli("circle", "name", "ours", "--circle-id", circle)
    rename = {
        "t": "CHANNEL_EVT",
        "op": "rename",
        "actor_node_id": v1.node_id,
        "display_name": "evil",
    }
    v1.post(_compact(rename), channel_id=CONTROL, display_name="", created_ts=2**41 - 1)
    named = {"t": "CIRCLE_NAME_EVT", "circle_id": circle, "name": "pwned"}
    v1.post(_compact(named), channel_id=CONTROL, display_name="", created_ts=2**41 - 2)
    _wait(lambda: '"pwned"' in "".join(_texts(node, circle, CONTROL)), "the events on our node")
    assert [c["name"] for c in node.json("circles")] == ["ours"]
    node.cli("channel", "create", "dev", "--circle-id", circle)
    node.cli("channel", "leave", "dev", "--circle-id", circle)
    node.cli("channel", "join", "dev", "--circle-id", circle)
    node.cli("rename", "still me")
    node.cli("circle", "name", "still ours", "--circle-id", circle)
    assert [c["name"] for c in node.json("circles")] == ["still ours"]
    assert our_id in _channels(node, circle)["dev"]["members"]
    assert _names(node, circle)[our_id] == "still me"
    held = metric_value(node.metrics(), "felund_bad_input_total", source="control", kind="future")
    assert held == 2
