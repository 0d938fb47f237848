"""The gossip handshake, either side, as sans-IO state machines.

Both protocols start with v1's handshake (HELLO, CHALLENGE, HELLO_AUTH,
WELCOME). A client offering our native protocol adds ``"native": 2`` to its
HELLO; a native server answers with the same key in CHALLENGE and WELCOME,
plus a proof that it holds the secret too, and both switch to sealed
binary frames. A v1 server ignores the key and the session stays v1.

Epochs (a circle re-keyed when a member was removed): a native HELLO carries
``epochs``, the ids of the epoch secrets the client holds, newest first.
The server picks the first one it holds and names it in CHALLENGE
(``epoch``); token, proof and session key are under that epoch's secret.
WELCOME names the server's newest (``epoch_id``). Unless the session's epoch
is the newest of both sides, it is a *catch-up* session: only control
messages cross (``felund.gossip.sessions``), so a lagging member gets the
epoch chain and a removed one nothing it could read. Each side decides that
from what it knows itself, so a side never sends its messages under an
epoch other than its newest whatever the other claims. A HELLO without
``epochs`` (v1, or a native node from before epochs) is under the root
secret and refused once the circle has moved past it.

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

from felund.epochs import MAX_OFFERED, ROOT, CircleKeys, is_epoch_id
from felund.errors import PeerError
from felund.gossip import native_frames as nativeproto
from felund.gossip import v1_frames as v1proto
from felund.v1 import crypto

HANDSHAKE_TIMEOUT_S = 10.0
_NODE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
# The ERROR texts (a v1 client shows its peer's ERROR text to its user).
REKEYED = "this circle has a new key since a member was removed; ask a member for a new invite code"
NO_COMMON_EPOCH = "no common epoch: this node holds none of the circle's keys offered"


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
    epoch_id: str = ROOT  # the epoch whose secret keys the session
    catch_up: bool = False  # only control messages cross (not the newest of both sides)
    # This side's newest epoch when the session was keyed: a session that outlives a move
    # of it is ended (felund.gossip.node), whatever else happened meanwhile.
    newest: str = ROOT


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
        self, keys: Mapping[str, CircleKeys], node_id: str, now: float, can_anchor: bool = False
    ) -> None:
        super().__init__(now)
        self._keys = keys
        self._node_id = node_id
        self._can_anchor = can_anchor
        self._hello: dict[str, Any] | None = None
        self._server_nonce = v1proto.nonce()
        self._epoch = ROOT  # the session's, once HELLO has come
        self._epochs_offered = False  # the client follows epochs
        self._catch_up = False

    def _on_frame(self, frame: dict[str, Any]) -> None:
        if self._hello is None:
            self._on_hello(frame)
        else:
            self._on_auth(self._hello, frame)

    def _on_hello(self, frame: dict[str, Any]) -> None:
        hello = v1proto.expect(frame, "HELLO", circle_id=str)
        node_id_of(hello.get("node_id"))
        keys = self._keys.get(hello["circle_id"])
        if keys is None:
            self._send({"t": "ERROR", "err": "Unknown circle_id"})
            raise PeerError("unknown_circle", "HELLO for a circle this node is not in")
        native = self._native(hello)
        challenge: dict[str, Any] = {"t": "CHALLENGE", "nonce": self._server_nonce}
        if native and "epochs" in hello:
            offered = _offered(hello["epochs"])
            chosen = keys.choose(offered)
            if chosen is None:
                self._send({"t": "ERROR", "err": NO_COMMON_EPOCH})
                raise PeerError("no_common_epoch", "none of the epochs offered is held here")
            self._epoch, self._epochs_offered = chosen, True
            self._catch_up = not chosen == keys.newest == offered[0]
            challenge["epoch"] = chosen
        elif keys.rekeyed:
            self._send({"t": "ERROR", "err": REKEYED})
            raise PeerError("old_epoch", "a peer without epochs, in a circle re-keyed")
        if native:
            challenge["native"] = nativeproto.VERSION
        self._hello = hello
        self._send(challenge)

    def _on_auth(self, hello: dict[str, Any], frame: dict[str, Any]) -> None:
        auth = v1proto.expect(frame, "HELLO_AUTH", token=str)
        peer_id, circle_id = hello["node_id"], hello["circle_id"]
        keys = self._keys[circle_id]
        secret = keys.secret_of(self._epoch)
        assert secret is not None  # chosen among the held ones in _on_hello
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
            if self._epochs_offered:
                welcome["epoch_id"] = keys.newest
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
            epoch_id=self._epoch,
            catch_up=self._catch_up,
            newest=keys.newest,
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
        keys: CircleKeys,
        node_id: str,
        listen_addr: str,
        offer_native: bool,
        now: float,
        can_anchor: bool = False,
    ) -> None:
        super().__init__(now)
        self._keys, self._node_id = keys, node_id
        self._circle_id = circle_id = keys.circle_id
        self._offer_native = offer_native
        self._epoch: str | None = None  # the session's, once CHALLENGE has come
        self._named = False  # CHALLENGE named it: the server follows epochs
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
            hello["epochs"] = keys.offer()
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
        if self._offer_native and "epoch" in frame:
            epoch = frame["epoch"]
            if not is_epoch_id(epoch) or self._keys.secret_of(epoch) is None:
                raise PeerError("frame", "CHALLENGE names an epoch that was not offered")
            self._named = True
        elif self._keys.rekeyed:  # a v1 peer, or one from before epochs
            raise PeerError("old_epoch", "the peer does not follow the circle's new key")
        else:
            epoch = ROOT
        self._epoch, self._server_nonce = epoch, nonce
        token = crypto.handshake_token(self._secret, self._node_id, self._circle_id, nonce)
        self._send({"t": "HELLO_AUTH", "token": token})

    @property
    def _secret(self) -> str:
        secret = self._keys.secret_of(self._epoch or ROOT)
        assert secret is not None  # the root when not re-keyed, else one checked held
        return secret

    def _on_welcome(self, server_nonce: str, frame: dict[str, Any]) -> None:
        welcome = v1proto.expect(frame, "WELCOME")
        peer_id = node_id_of(welcome.get("node_id"))
        secret, circle_id, client_nonce = self._secret, self._circle_id, self._client_nonce
        channel, v1_key, catch_up = None, None, False
        if self._offer_native and welcome.get("native") == nativeproto.VERSION:
            if not crypto.verify_native_server_proof(
                secret, peer_id, circle_id, client_nonce, welcome.get("proof")
            ):
                raise PeerError("auth", "the server's proof does not verify")
            key = crypto.native_session_key(secret, client_nonce, server_nonce)
            channel = nativeproto.Channel(key, is_client=True)
            if self._named:
                theirs = welcome.get("epoch_id")
                if not is_epoch_id(theirs):
                    raise PeerError("frame", "WELCOME.epoch_id must be an epoch id")
                catch_up = not self._epoch == self._keys.newest == theirs
        elif self._keys.rekeyed:
            raise PeerError("old_epoch", "the peer did not take the native protocol")
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
            epoch_id=self._epoch or ROOT,
            catch_up=catch_up,
            newest=self._keys.newest,
        )


def _offered(value: object) -> list[str]:
    """A HELLO's ``epochs``: at most MAX_OFFERED epoch ids, newest first; PeerError if not."""
    if (
        not isinstance(value, list)
        or not 0 < len(value) <= MAX_OFFERED
        or not all(is_epoch_id(e) for e in value)
    ):
        raise PeerError("frame", f"HELLO.epochs must be 1 to {MAX_OFFERED} epoch ids")
    return value
