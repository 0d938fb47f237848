"""Self-tests of the independent v1 peer (tests/v1peer.py), without our node.

They prove the reference peer right on its own: it reproduces the shared
vectors with its own functions, and two V1Peers speak the v1 gossip session
to each other in every mode. Only then is it a fair judge of our node.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.v1peer import (
    MAX_PLAIN_FRAME,
    WIRE_KEYS,
    HandshakeError,
    RawConn,
    V1Peer,
    check_message,
    circle_hint_for,
    circle_id_for,
    compact_json,
    decrypt_message,
    encrypt_message,
    handshake_token,
    message_key,
    message_mac,
    open_frame,
    seal_frame,
    secret_bytes,
    session_key,
)

pytestmark = pytest.mark.timeout(60)


# The repository's copy of the shared vectors (tests/vectors/README.md says whence); read
# directly, as this module's peer takes nothing from felund.
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "felund-v1.json"
CASES: dict[str, list[Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))["cases"]

SECRET = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
OTHER_SECRET = "ff" * 32
LOCAL = "127.0.0.1"
EXCHANGE_FRAMES = ("PEERS", "MSGS_HAVE", "MSGS_REQ", "MSGS_SEND")


def cases(group: str) -> list[Any]:
    return [pytest.param(c, id=f"{group}-{i}") for i, c in enumerate(CASES[group])]


@pytest.fixture
def make_peer() -> Iterator[Callable[..., V1Peer]]:
    """Make V1Peers (serving if asked) with short timeouts; all stopped at the end."""
    made: list[V1Peer] = []

    def make(secret: str = SECRET, *, serve: bool = True, **kwargs: Any) -> V1Peer:
        kwargs.setdefault("read_timeout", 5.0)
        peer = V1Peer(secret, host=LOCAL, **kwargs)
        made.append(peer)
        if serve:
            peer.start_server()
        return peer

    yield make
    for peer in made:
        peer.stop()


def _wait_server_sessions(peer: V1Peer, n: int = 1) -> None:
    assert peer.wait_for(lambda: len(peer.server_sessions) >= n, 5.0), peer.server_sessions


# --- vectors -----------------------------------------------------------------


@pytest.mark.parametrize("case", cases("circle_id"))
def test_vector_circle_id(case):
    assert circle_id_for(case["secret_hex"]) == case["circle_id"]
    assert V1Peer(case["secret_hex"]).circle_id == case["circle_id"]


@pytest.mark.parametrize("case", cases("circle_hint"))
def test_vector_circle_hint(case):
    assert circle_hint_for(case["circle_id"]) == case["circle_hint"]


def _wire_from(case_msg: dict[str, Any], **fields: Any) -> dict[str, Any]:
    msg = {"mac": "", "schema_version": 1, "enc": None, **case_msg, **fields}
    assert set(msg) == set(WIRE_KEYS)
    return msg


@pytest.mark.parametrize("case", cases("message_mac"))
def test_vector_message_mac(case):
    secret = secret_bytes(case["secret_hex"])
    assert message_mac(secret, case["message"]) == case["mac"]
    wire = _wire_from(case["message"], mac=case["mac"])
    checked = check_message(secret, case["message"]["circle_id"], wire)
    assert checked.reason is None
    assert checked.text == case["message"]["text"]


@pytest.mark.parametrize("case", cases("message_key"))
def test_vector_message_key(case):
    assert message_key(secret_bytes(case["secret_hex"])).hex() == case["key_hex"]


@pytest.mark.parametrize("case", cases("message_enc"))
def test_vector_message_enc(case):
    secret = secret_bytes(case["secret_hex"])
    msg = case["message"]
    wire = _wire_from(msg, display_name="", text="", schema_version=2, enc=case["enc"])
    assert decrypt_message(secret, wire) == (msg["display_name"], msg["text"])
    nonce = base64.b64decode(case["enc"]["nonce"])
    assert encrypt_message(secret, msg, msg["display_name"], msg["text"], nonce) == case["enc"]
    checked = check_message(secret, msg["circle_id"], wire)
    assert checked.reason is None
    assert (checked.display_name, checked.text) == (msg["display_name"], msg["text"])


@pytest.mark.parametrize("case", cases("handshake_token"))
def test_vector_handshake_token(case):
    token = handshake_token(
        secret_bytes(case["secret_hex"]), case["node_id"], case["circle_id"], case["nonce"]
    )
    assert token == case["token"]


@pytest.mark.parametrize("case", cases("session_key"))
def test_vector_session_key(case):
    key = session_key(secret_bytes(case["secret_hex"]), case["client_nonce"], case["server_nonce"])
    assert key.hex() == case["key_hex"]


@pytest.mark.parametrize("case", cases("session_frame"))
def test_vector_session_frame(case):
    key = bytes.fromhex(case["key_hex"])
    assert open_frame(key, case["line"]) == case["frame"]
    nonce = base64.b64decode(case["line"])[:12]
    assert seal_frame(key, case["frame"], nonce).decode() == case["line"]


# --- message acceptance --------------------------------------------------------

MAC_CASE = CASES["message_mac"][0]
ENC_CASE = CASES["message_enc"][0]
CIRCLE = circle_id_for(SECRET)


def _mac_msg(**fields: Any) -> dict[str, Any]:
    """A schema-1 message of the vector, fields changed, MAC recomputed."""
    msg = _wire_from(MAC_CASE["message"], **fields)
    msg["mac"] = message_mac(secret_bytes(SECRET), msg)
    return msg


def _enc_msg(**fields: Any) -> dict[str, Any]:
    return (
        _wire_from(
            ENC_CASE["message"], display_name="", text="", schema_version=2, enc=ENC_CASE["enc"]
        )
        | fields
    )


def _other_circle_msg() -> dict[str, Any]:
    msg = _wire_from(MAC_CASE["message"], circle_id=circle_id_for(OTHER_SECRET))
    msg["mac"] = message_mac(secret_bytes(OTHER_SECRET), msg)
    return msg


def _tampered_enc() -> dict[str, Any]:
    raw = bytearray(base64.b64decode(ENC_CASE["enc"]["ciphertext"]))
    raw[0] ^= 1
    return _enc_msg(enc=ENC_CASE["enc"] | {"ciphertext": base64.b64encode(raw).decode()})


def _enc_with_valid_mac_but_bad_enc() -> dict[str, Any]:
    good = _mac_msg()
    return _tampered_enc() | {
        "display_name": good["display_name"],
        "text": good["text"],
        "mac": good["mac"],
    }


def _without(key: str) -> dict[str, Any]:
    msg = _mac_msg()
    del msg[key]
    return msg


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        # The poisoning case of the spec: the MAC covers str(created_ts), so a
        # string timestamp carries a valid MAC and must still be refused.
        pytest.param(lambda: _mac_msg(created_ts="1764000000"), "bad_created_ts", id="ts-str"),
        pytest.param(lambda: _mac_msg(created_ts=True), "bad_created_ts", id="ts-bool"),
        pytest.param(lambda: _mac_msg(created_ts=1.5), "bad_created_ts", id="ts-float"),
        pytest.param(lambda: _mac_msg() | {"extra": 1}, "unknown_key", id="unknown-key"),
        pytest.param(lambda: _without("mac"), "missing_key", id="no-mac"),
        pytest.param(lambda: _without("enc"), "missing_key", id="no-enc"),
        pytest.param(lambda: _mac_msg(msg_id="A" * 32), "bad_msg_id", id="msg-id-upper"),
        pytest.param(lambda: _mac_msg(msg_id="ab"), "bad_msg_id", id="msg-id-short"),
        pytest.param(lambda: _mac_msg(channel_id="__x"), "bad_channel_id", id="reserved"),
        pytest.param(lambda: _mac_msg(channel_id="A"), "bad_channel_id", id="upper-channel"),
        pytest.param(lambda: _mac_msg(author_node_id=""), "bad_author_node_id", id="author"),
        pytest.param(lambda: _mac_msg(text=None), "bad_text", id="text-null"),
        pytest.param(lambda: _mac_msg(schema_version=3), "bad_schema_version", id="schema"),
        pytest.param(lambda: _mac_msg(enc="x"), "bad_enc", id="enc-str"),
        pytest.param(lambda: _mac_msg() | {"mac": "0" * 64}, "bad_mac", id="bad-mac"),
        pytest.param(lambda: _mac_msg() | {"text": "edited"}, "bad_mac", id="edited"),
        pytest.param(_other_circle_msg, "wrong_circle", id="other-circle"),
        pytest.param(_tampered_enc, "enc_failed", id="enc-tampered"),
        pytest.param(lambda: _enc_msg(channel_id="random"), "enc_failed", id="enc-ad"),
        # With enc present there is no fallback to a valid mac.
        pytest.param(_enc_with_valid_mac_but_bad_enc, "enc_failed", id="enc-no-fallback"),
        pytest.param(lambda: [1], "not_object", id="list"),
    ],
)
def test_message_dropped(make, reason):
    peer = V1Peer(SECRET)
    assert check_message(peer.secret, CIRCLE, make()).reason == reason
    assert not peer.receive(make())
    assert peer.dropped == {reason: 1}
    assert peer.messages() == []


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_mac_msg, id="mac"),
        pytest.param(_enc_msg, id="enc"),
        pytest.param(lambda: _without("channel_id"), id="channel-default"),
        pytest.param(lambda: _mac_msg(channel_id="__control", text="{}"), id="control"),
    ],
)
def test_message_accepted(make):
    peer = V1Peer(SECRET)
    assert peer.receive(make())
    assert not peer.receive(make())
    assert peer.duplicates == 1
    assert not peer.dropped
    [stored] = peer.messages()
    assert tuple(stored) == WIRE_KEYS


@pytest.mark.parametrize("encrypt", [False, True])
def test_post_makes_a_valid_message(encrypt):
    peer = V1Peer(SECRET, encrypt_messages=encrypt)
    msg = peer.post("hi | there", channel_id="random", display_name="Bøb")
    assert tuple(msg) == WIRE_KEYS
    assert isinstance(msg["created_ts"], int)
    assert len(msg["msg_id"]) == 32
    assert msg["schema_version"] == (2 if encrypt else 1)
    assert (msg["enc"] is not None) == encrypt
    if encrypt:
        assert msg["text"] == msg["display_name"] == msg["mac"] == ""
    other = V1Peer(SECRET)
    assert other.receive(msg)
    assert other.plaintext(msg["msg_id"]) == ("Bøb", "hi | there")
    assert other.texts() == {"hi | there"}


# --- two peers over TCP -------------------------------------------------------


@pytest.mark.parametrize("enc_session", [True, False], ids=["enc-session", "plain-session"])
@pytest.mark.parametrize("enc_messages", [False, True], ids=["mac-msgs", "enc-msgs"])
def test_two_peers_exchange_both_ways(make_peer, enc_session, enc_messages):
    server = make_peer(encrypt_session=enc_session, encrypt_messages=enc_messages)
    client = make_peer(encrypt_session=enc_session, encrypt_messages=enc_messages)
    server.post("from server 1")
    server.post("from server 2", channel_id="random")
    client.post("from client 1")
    client.post("from client 2", display_name="c")

    result = client.sync_with(LOCAL, server.port)

    assert result.ok, result.error
    assert result.encrypted is enc_session
    assert (result.offered, result.requested, result.sent, result.received) == (2, 2, 2, 2)
    assert result.remote_node_id == server.node_id
    assert result.frames == ("CHALLENGE", "WELCOME", *EXCHANGE_FRAMES)
    everything = {"from server 1", "from server 2", "from client 1", "from client 2"}
    assert client.texts() == everything
    _wait_server_sessions(server)
    [served] = server.server_sessions
    assert served.ok, served.error
    assert served.encrypted is enc_session
    assert served.received == 2
    assert served.frames == ("HELLO", "HELLO_AUTH", *EXCHANGE_FRAMES)
    assert server.texts() == everything
    for peer in (server, client):
        assert not peer.dropped
        assert all(tuple(m) == WIRE_KEYS for m in peer.messages())
        assert all(m["schema_version"] == (2 if enc_messages else 1) for m in peer.messages())
    # Each learned the other: the server as (observed IP, advertised port).
    assert server.peers()[client.node_id]["addr"] == f"{LOCAL}:{client.port}"
    assert client.peers()[server.node_id]["addr"] == f"{LOCAL}:{server.port}"

    again = client.sync_with(LOCAL, server.port)
    assert again.ok, again.error
    assert (again.requested, again.sent, again.received) == (0, 0, 0)


@pytest.mark.parametrize(
    ("client_enc", "server_enc"), [(True, False), (False, True)], ids=["srv-plain", "cli-plain"]
)
def test_session_is_plain_unless_both_want_encryption(make_peer, client_enc, server_enc):
    server = make_peer(encrypt_session=server_enc)
    client = make_peer(encrypt_session=client_enc)
    server.post("s")
    client.post("c")
    result = client.sync_with(LOCAL, server.port)
    assert result.ok, result.error
    assert not result.encrypted
    assert client.texts() == {"s", "c"}
    _wait_server_sessions(server)
    assert not server.server_sessions[0].encrypted
    assert server.texts() == {"s", "c"}


def test_mac_and_enc_messages_mix(make_peer):
    server = make_peer(encrypt_messages=True)
    client = make_peer(encrypt_messages=False, serve=False)
    server.post("sealed")
    client.post("macced")
    assert client.sync_with(LOCAL, server.port).ok
    _wait_server_sessions(server)
    assert client.texts() == server.texts() == {"sealed", "macced"}
    # A client that does not listen advertises "" and teaches no address.
    assert client.node_id not in server.peers()


def test_peers_are_gossiped(make_peer):
    hub = make_peer()
    first = make_peer()
    late = make_peer()
    assert first.sync_with(LOCAL, hub.port).ok
    assert late.sync_with(LOCAL, hub.port).ok
    assert late.peers()[first.node_id]["addr"] == f"{LOCAL}:{first.port}"
    assert hub.node_id in late.peers()


def test_wrong_circle_gets_unknown_circle_id(make_peer):
    server = make_peer()
    server.post("secret stuff")
    stranger = make_peer(OTHER_SECRET)
    result = stranger.sync_with(LOCAL, server.port)
    assert not result.ok
    assert result.error == "Unknown circle_id"
    assert result.frames == ("ERROR",)
    assert stranger.texts() == set()
    _wait_server_sessions(server)
    assert server.server_sessions[0].error == "Unknown circle_id"
    assert server.server_sessions[0].frames == ("HELLO",)


@pytest.mark.parametrize("how", ["bad-token", "other-secret-claims-circle"])
def test_wrong_token_gets_auth_failed(make_peer, how):
    server = make_peer()
    if how == "bad-token":
        client = make_peer(serve=False)
        kwargs: dict[str, Any] = {"token": "0" * 64}
    else:
        # Someone who knows the circle_id but not the secret.
        client = make_peer(OTHER_SECRET, serve=False)
        kwargs = {"extra_hello": {"circle_id": server.circle_id}}
    with pytest.raises(HandshakeError, match=r"^Auth failed$"):
        client.handshake(LOCAL, server.port, **kwargs)
    _wait_server_sessions(server)
    assert server.server_sessions[0].error == "Auth failed"
    assert server.peers() == {}


@pytest.mark.parametrize("encrypt", [True, False])
def test_server_follows_the_spec_order_and_tolerates_extra_keys(make_peer, encrypt):
    """Drive the server frame by frame, with unknown keys in every frame we send."""
    server = make_peer()
    posted = server.post("from the server")
    me = make_peer(serve=False)
    mine = me.post("by hand")
    conn, welcome = me.handshake(
        LOCAL, server.port, encrypt=encrypt, extra_hello={"future": {"x": 1}}
    )
    with conn:
        assert set(welcome) == {"t", "node_id", "enc_ready", "can_anchor"}
        assert welcome["node_id"] == server.node_id
        assert welcome["enc_ready"] is encrypt
        assert welcome["can_anchor"] is False
        assert (conn.key is not None) is encrypt
        peers = conn.recv()
        have = conn.recv()
        assert peers == {"t": "PEERS", "circle_id": server.circle_id, "peers": []}
        assert have == {
            "t": "MSGS_HAVE",
            "circle_id": server.circle_id,
            "msg_ids": [posted["msg_id"]],
        }
        extra = {"future": True}
        conn.send({"t": "PEERS", "circle_id": me.circle_id, "peers": [], **extra})
        conn.send(
            {"t": "MSGS_HAVE", "circle_id": me.circle_id, "msg_ids": [mine["msg_id"]], **extra}
        )
        assert conn.recv() == {
            "t": "MSGS_REQ",
            "circle_id": server.circle_id,
            "msg_ids": [mine["msg_id"]],
        }
        conn.send(
            {"t": "MSGS_REQ", "circle_id": me.circle_id, "msg_ids": [posted["msg_id"]], **extra}
        )
        sent = conn.recv()
        assert sent == {"t": "MSGS_SEND", "circle_id": server.circle_id, "messages": [posted]}
        conn.send({"t": "MSGS_SEND", "circle_id": me.circle_id, "messages": [mine], **extra})
        assert conn.closed_by_peer()
    _wait_server_sessions(server)
    assert server.server_sessions[0].ok, server.server_sessions[0].error
    assert server.texts() == {"from the server", "by hand"}


def test_server_drops_bad_messages_in_a_session(make_peer):
    server = make_peer()
    poisoned = _mac_msg(created_ts="1764000000")
    server.inject_raw(poisoned)
    server.inject_raw(_other_circle_msg() | {"msg_id": "1" * 32})
    client = make_peer(serve=False)
    result = client.sync_with(LOCAL, server.port)
    assert result.ok, result.error
    assert result.received == 0
    assert client.dropped == {"bad_created_ts": 1, "wrong_circle": 1}
    assert client.messages() == []


# --- frame size and timeouts -----------------------------------------------------


def _padded_hello(peer: V1Peer, size: int) -> bytes:
    hello = {
        "t": "HELLO",
        "node_id": peer.node_id,
        "circle_id": peer.circle_id,
        "listen_addr": "",
        "can_anchor": False,
        "pad": "",
    }
    hello["pad"] = "x" * (size - len(compact_json(hello)))
    line = compact_json(hello)
    assert len(line) == size
    return line


def test_plain_line_over_16k_closes_the_connection(make_peer):
    server = make_peer()
    with RawConn(LOCAL, server.port) as conn:
        conn.send_line(_padded_hello(server, MAX_PLAIN_FRAME + 1))
        assert conn.closed_by_peer()
    _wait_server_sessions(server)
    assert "longer than 16384" in (server.server_sessions[0].error or "")
    assert server.frames_seen == []


def test_plain_line_of_exactly_16k_is_read(make_peer):
    server = make_peer()
    with RawConn(LOCAL, server.port) as conn:
        conn.send_line(_padded_hello(server, MAX_PLAIN_FRAME))
        challenge = conn.recv()
    assert challenge is not None
    assert challenge["t"] == "CHALLENGE"
    assert len(challenge["nonce"]) == 32
    int(challenge["nonce"], 16)


def test_client_refuses_an_oversized_frame(make_peer):
    listener = socket.create_server((LOCAL, 0))
    listener.settimeout(5.0)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.makefile("rb").readline()
            pad = b"x" * MAX_PLAIN_FRAME
            conn.sendall(b'{"t":"CHALLENGE","nonce":"' + b"0" * 32 + b'","p":"' + pad + b'"}\n')

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client = make_peer(serve=False)
        result = client.sync_with(LOCAL, listener.getsockname()[1], timeout=5.0)
    finally:
        thread.join(5.0)
        listener.close()
    assert not result.ok
    assert "longer than 16384" in (result.error or "")


def test_read_timeout_closes_the_connection(make_peer):
    server = make_peer(read_timeout=0.3)
    started = time.monotonic()
    with RawConn(LOCAL, server.port) as conn:
        assert conn.closed_by_peer()
    assert time.monotonic() - started < 3.0
    _wait_server_sessions(server)
    assert server.server_sessions[0].error == "read timeout"


@pytest.mark.parametrize("enc_session", [True, False], ids=["enc-session", "plain-session"])
def test_large_history_is_sent_in_frames_that_fit(make_peer, enc_session):
    """MSGS_HAVE, MSGS_REQ and MSGS_SEND stay within 16 KB; rounds finish the job."""
    server = make_peer(encrypt_session=enc_session)
    client = make_peer(encrypt_session=enc_session, serve=False)
    base = 1_764_000_000
    for i in range(600):
        server.post(f"message {i:04d} " + "z" * 150, created_ts=base + i)
    rounds = 0
    while True:
        result = client.sync_with(LOCAL, server.port)
        assert result.ok, result.error
        rounds += 1
        if result.received == 0:
            break
        assert rounds < 60
    _wait_server_sessions(server, rounds)
    offered = server.server_sessions[0].offered
    # The v1 weakness: only the newest ids that fit are ever offered.
    assert 300 < offered < 600
    assert server.server_sessions[0].sent < offered
    assert rounds > 2
    got = sorted(m["created_ts"] for m in client.messages())
    assert got == list(range(base + 600 - offered, base + 600))
    assert 0 < server.max_line_sent <= MAX_PLAIN_FRAME
    assert 0 < client.max_line_sent <= MAX_PLAIN_FRAME


def test_a_message_too_big_for_a_frame_does_not_block_older_ones(make_peer):
    server = make_peer()
    client = make_peer(serve=False)
    server.post("old and small", created_ts=1_764_000_000)
    server.post("y" * 14_000, created_ts=1_764_000_001)  # over an encrypted frame's budget
    result = client.sync_with(LOCAL, server.port)
    assert result.ok, result.error
    assert result.requested == 2
    assert client.texts() == {"old and small"}
    assert server.max_line_sent <= MAX_PLAIN_FRAME
