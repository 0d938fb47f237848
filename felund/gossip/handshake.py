"""The gossip handshake, either side, as sans-IO state machines.

Both protocols start with v1's handshake (HELLO, CHALLENGE, HELLO_AUTH,
WELCOME). A client offering our native protocol adds ``"native": 2`` to its
HELLO; a native server answers with the same key in CHALLENGE and WELCOME,
plus a proof that it holds the secret too, and both switch to sealed
binary frames. A v1 server ignores the key and the session stays v1.

Bytes in (``receive_data``), bytes out (``data_to_send``), a deadline on the
caller's clock (``expire``). A side that fails the other raises PeerError
once the frame telling it so (ERROR) is queued; the caller sends what is
queued before it closes. Moving the bytes is ``felund.gossip.link``'s job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from felund.errors import PeerError
from felund.gossip import native_frames as nativeproto
from felund.gossip import v1_frames as v1proto
from felund.v1 import crypto

HANDSHAKE_TIMEOUT_S = 10.0
_NODE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_HEX32 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class Established:
    """What an authenticated connection to a member of one circle agreed on."""

    circle_id: str
    secret: str
    peer_node_id: str
    is_client: bool
    native: bool
    v1_key: bytes | None = None  # v1 session encryption, when agreed
    channel: nativeproto.Channel | None = None  # the native protocol's, when agreed
    peer_listen_addr: str = ""  # what an inbound client advertised
    rest: bytes = b""  # what the peer sent after the handshake: the session's first bytes


def node_id_of(value: object) -> str:
    """A peer's node id as the handshake accepts it; PeerError otherwise."""
    if not isinstance(value, str) or _NODE_ID_RE.fullmatch(value) is None:
        raise PeerError("frame", "node_id must be 1-128 of A-Z a-z 0-9 _ . -")
    return value


class _Handshake:
    """Lines in, lines out, within one deadline."""

    def __init__(self, now: float) -> None:
        self.deadline = now + HANDSHAKE_TIMEOUT_S
        self.established: Established | None = None
        self._lines = v1proto.LineBuffer()
        self._out = bytearray()

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the connection (``b""``: it closed); PeerError if the peer fails."""
        if not data:
            raise self._lines.closed()
        self._lines.feed(data)
        while self.established is None:
            line = self._lines.next_line()
            if line is None:
                return
            self._on_frame(v1proto.decode(line, None))

    def data_to_send(self) -> bytes:
        """The bytes queued for the peer (taken: each is returned once)."""
        out, self._out = bytes(self._out), bytearray()
        return out

    def expire(self, now: float) -> None:
        """PeerError if the deadline has passed at ``now``."""
        if self.established is None and now >= self.deadline:
            raise PeerError("timeout", f"handshake not done in {HANDSHAKE_TIMEOUT_S:g} s")

    def _send(self, frame: dict[str, Any]) -> None:
        self._out += v1proto.encode(frame, None)

    def _on_frame(self, frame: dict[str, Any]) -> None:
        raise NotImplementedError


class ServerHandshake(_Handshake):
    """The side that was connected to: HELLO in, CHALLENGE out, HELLO_AUTH in, WELCOME out."""

    def __init__(
        self, secrets: Mapping[str, str], node_id: str, now: float, can_anchor: bool = False
    ) -> None:
        super().__init__(now)
        self._secrets = secrets
        self._node_id = node_id
        self._can_anchor = can_anchor
        self._hello: dict[str, Any] | None = None
        self._server_nonce = v1proto.nonce()

    def _on_frame(self, frame: dict[str, Any]) -> None:
        if self._hello is None:
            self._on_hello(frame)
        else:
            self._on_auth(self._hello, frame)

    def _on_hello(self, frame: dict[str, Any]) -> None:
        hello = v1proto.expect(frame, "HELLO", circle_id=str)
        node_id_of(hello.get("node_id"))
        if hello["circle_id"] not in self._secrets:
            self._send({"t": "ERROR", "err": "Unknown circle_id"})
            raise PeerError("unknown_circle", "HELLO for a circle this node is not in")
        self._hello = hello
        challenge: dict[str, Any] = {"t": "CHALLENGE", "nonce": self._server_nonce}
        if self._native(hello):
            challenge["native"] = nativeproto.VERSION
        self._send(challenge)

    def _on_auth(self, hello: dict[str, Any], frame: dict[str, Any]) -> None:
        auth = v1proto.expect(frame, "HELLO_AUTH", token=str)
        peer_id, circle_id = hello["node_id"], hello["circle_id"]
        secret = self._secrets[circle_id]
        nonce = self._server_nonce
        if not crypto.verify_handshake_token(secret, peer_id, circle_id, nonce, auth["token"]):
            self._send({"t": "ERROR", "err": "Auth failed"})
            raise PeerError("auth", "HELLO_AUTH token does not verify")
        client_nonce = hello.get("nonce")
        if not isinstance(client_nonce, str) or _HEX32.fullmatch(client_nonce) is None:
            client_nonce = None
        enc_ready = client_nonce is not None
        welcome: dict[str, Any] = {
            "t": "WELCOME",
            "node_id": self._node_id,
            "enc_ready": enc_ready,
            "can_anchor": self._can_anchor,
        }
        channel, v1_key = None, None
        if client_nonce is not None and hello.get("native") == nativeproto.VERSION:
            welcome["native"] = nativeproto.VERSION
            welcome["proof"] = crypto.native_server_proof(
                secret, self._node_id, circle_id, client_nonce
            )
            key = crypto.native_session_key(secret, client_nonce, nonce)
            channel = nativeproto.Channel(key, is_client=False)
        elif client_nonce is not None:
            v1_key = crypto.session_key(secret, client_nonce, nonce)
        self._send(welcome)
        listen = hello.get("listen_addr")
        self.established = Established(
            circle_id,
            secret,
            peer_id,
            is_client=False,
            native=channel is not None,
            v1_key=v1_key,
            channel=channel,
            peer_listen_addr=listen if isinstance(listen, str) else "",
            rest=self._lines.rest(),
        )

    @staticmethod
    def _native(hello: dict[str, Any]) -> bool:
        nonce = hello.get("nonce")
        return (
            isinstance(nonce, str)
            and _HEX32.fullmatch(nonce) is not None
            and hello.get("native") == nativeproto.VERSION
        )


class ClientHandshake(_Handshake):
    """The side that connected: HELLO out, CHALLENGE in, HELLO_AUTH out, WELCOME in."""

    def __init__(
        self,
        *,
        circle_id: str,
        secret: str,
        node_id: str,
        listen_addr: str,
        offer_native: bool,
        now: float,
        can_anchor: bool = False,
    ) -> None:
        super().__init__(now)
        self._circle_id, self._secret, self._node_id = circle_id, secret, node_id
        self._offer_native = offer_native
        self._client_nonce = v1proto.nonce()
        self._server_nonce: str | None = None
        hello: dict[str, Any] = {
            "t": "HELLO",
            "node_id": node_id,
            "circle_id": circle_id,
            "listen_addr": listen_addr,
            "nonce": self._client_nonce,
            "can_anchor": can_anchor,
        }
        if offer_native:
            hello["native"] = nativeproto.VERSION
        self._send(hello)

    def _on_frame(self, frame: dict[str, Any]) -> None:
        if self._server_nonce is None:
            self._on_challenge(frame)
        else:
            self._on_welcome(self._server_nonce, frame)

    def _on_challenge(self, frame: dict[str, Any]) -> None:
        nonce = v1proto.expect(frame, "CHALLENGE", nonce=str)["nonce"]
        if _HEX32.fullmatch(nonce) is None:
            raise PeerError("frame", "CHALLENGE nonce must be 32 hex")
        self._server_nonce = nonce
        token = crypto.handshake_token(self._secret, self._node_id, self._circle_id, nonce)
        self._send({"t": "HELLO_AUTH", "token": token})

    def _on_welcome(self, server_nonce: str, frame: dict[str, Any]) -> None:
        welcome = v1proto.expect(frame, "WELCOME")
        peer_id = node_id_of(welcome.get("node_id"))
        secret, circle_id, client_nonce = self._secret, self._circle_id, self._client_nonce
        channel, v1_key = None, None
        if self._offer_native and welcome.get("native") == nativeproto.VERSION:
            if not crypto.verify_native_server_proof(
                secret, peer_id, circle_id, client_nonce, welcome.get("proof")
            ):
                raise PeerError("auth", "the server's proof does not verify")
            key = crypto.native_session_key(secret, client_nonce, server_nonce)
            channel = nativeproto.Channel(key, is_client=True)
        elif welcome.get("enc_ready") is True:
            v1_key = crypto.session_key(secret, client_nonce, server_nonce)
        self.established = Established(
            circle_id,
            secret,
            peer_id,
            is_client=True,
            native=channel is not None,
            v1_key=v1_key,
            channel=channel,
            rest=self._lines.rest(),
        )
