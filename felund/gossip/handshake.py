"""Opening an authenticated gossip connection, as server or client.

Both protocols start with v1's handshake (HELLO, CHALLENGE, HELLO_AUTH,
WELCOME). A client offering our native protocol adds ``"native": 2`` to its
HELLO; a native server answers with the same key in CHALLENGE and WELCOME,
plus a proof that it holds the secret too, and both switch to sealed
binary frames. A v1 server ignores the key and the session stays v1.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from felund import metrics
from felund.errors import PeerError
from felund.gossip import native_frames as nativeproto
from felund.gossip import v1_frames as v1proto
from felund.v1 import crypto

HANDSHAKE_TIMEOUT_S = 10.0
_NODE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")


@dataclass(slots=True)
class Link:
    """An authenticated connection to a member of one circle."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    circle_id: str
    secret: str
    peer_node_id: str
    is_client: bool
    native: bool
    v1_key: bytes | None = None  # v1 session encryption, when agreed
    channel: nativeproto.Channel | None = None
    peer_listen_addr: str = ""  # what an inbound client advertised
    peer_host: str = ""  # the address we see it at
    bytes_in: int = 0
    bytes_out: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def count_in(self, n: int) -> None:
        """Account for bytes received (live, so a long session shows in metrics)."""
        self.bytes_in += n
        metrics.GOSSIP_BYTES.labels("in").inc(n)

    def count_out(self, n: int) -> None:
        """Account for bytes sent."""
        self.bytes_out += n
        metrics.GOSSIP_BYTES.labels("out").inc(n)

    async def read_line(self, timeout: float = v1proto.READ_TIMEOUT_S) -> dict[str, Any]:
        """The next v1 frame."""
        line = await _read_line(self.reader, timeout)
        self.count_in(len(line))
        return v1proto.decode(line, self.v1_key)

    async def write_line(self, frame: dict[str, Any]) -> None:
        """Send one v1 frame."""
        data = v1proto.encode(frame, self.v1_key)
        self.count_out(len(data))
        self.writer.write(data)
        await self.writer.drain()

    async def read_frame(self, timeout: float) -> dict[str, Any]:
        """The next native frame."""
        assert self.channel is not None
        try:
            header = await asyncio.wait_for(self.reader.readexactly(4), timeout)
            body = await asyncio.wait_for(
                self.reader.readexactly(nativeproto.frame_length(header)), timeout
            )
        except TimeoutError:
            raise PeerError("timeout", f"nothing read for {timeout:g} s") from None
        except asyncio.IncompleteReadError:
            raise PeerError("closed", "connection closed") from None
        self.count_in(4 + len(body))
        return self.channel.open(body)

    def close(self) -> None:
        """Close the connection (no waiting)."""
        self.writer.close()


async def _read_line(reader: asyncio.StreamReader, timeout: float) -> bytes:
    try:
        line = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
    except TimeoutError:
        raise PeerError("timeout", f"nothing read for {timeout:g} s") from None
    except asyncio.LimitOverrunError:
        raise PeerError("too_long", f"line over {v1proto.MAX_READ_LINE} bytes") from None
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise PeerError("closed", "connection closed mid-line") from None
        raise PeerError("closed", "connection closed") from None
    return line


def _node_id(value: object) -> str:
    if not isinstance(value, str) or _NODE_ID_RE.fullmatch(value) is None:
        raise PeerError("frame", "node_id must be 1-128 of A-Z a-z 0-9 _ . -")
    return value


async def _send(writer: asyncio.StreamWriter, frame: dict[str, Any]) -> None:
    writer.write(v1proto.encode(frame, None))
    await writer.drain()


async def accept(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    secrets: Mapping[str, str],
    node_id: str,
) -> Link:
    """Run the server side of the handshake; PeerError if the client fails it."""
    hello = v1proto.expect(
        v1proto.decode(await _read_line(reader, HANDSHAKE_TIMEOUT_S), None), "HELLO", circle_id=str
    )
    peer_id = _node_id(hello.get("node_id"))
    circle_id = hello["circle_id"]
    secret = secrets.get(circle_id)
    if secret is None:
        await _send(writer, {"t": "ERROR", "err": "Unknown circle_id"})
        raise PeerError("unknown_circle", "HELLO for a circle this node is not in")
    client_nonce = hello.get("nonce")
    enc_ready = (
        isinstance(client_nonce, str)
        and len(client_nonce) == 32
        and all(c in "0123456789abcdef" for c in client_nonce)
    )
    native = enc_ready and hello.get("native") == nativeproto.VERSION
    server_nonce = v1proto.nonce()
    challenge: dict[str, Any] = {"t": "CHALLENGE", "nonce": server_nonce}
    if native:
        challenge["native"] = nativeproto.VERSION
    await _send(writer, challenge)
    auth = v1proto.expect(
        v1proto.decode(await _read_line(reader, HANDSHAKE_TIMEOUT_S), None), "HELLO_AUTH", token=str
    )
    if not crypto.verify_handshake_token(secret, peer_id, circle_id, server_nonce, auth["token"]):
        await _send(writer, {"t": "ERROR", "err": "Auth failed"})
        raise PeerError("auth", "HELLO_AUTH token does not verify")
    welcome: dict[str, Any] = {
        "t": "WELCOME",
        "node_id": node_id,
        "enc_ready": enc_ready,
        "can_anchor": False,
    }
    listen = hello.get("listen_addr")
    peer = writer.get_extra_info("peername")
    link = Link(
        reader,
        writer,
        circle_id,
        secret,
        peer_id,
        is_client=False,
        native=native,
        peer_listen_addr=listen if isinstance(listen, str) else "",
        peer_host=str(peer[0]) if peer else "",
    )
    if native:
        assert isinstance(client_nonce, str)
        welcome["native"] = nativeproto.VERSION
        welcome["proof"] = crypto.native_server_proof(secret, node_id, circle_id, client_nonce)
        link.channel = nativeproto.Channel(
            crypto.native_session_key(secret, client_nonce, server_nonce), is_client=False
        )
    elif enc_ready:
        assert isinstance(client_nonce, str)
        link.v1_key = crypto.session_key(secret, client_nonce, server_nonce)
    await _send(writer, welcome)
    return link


async def connect(
    host: str,
    port: int,
    *,
    circle_id: str,
    secret: str,
    node_id: str,
    listen_addr: str,
    offer_native: bool,
) -> Link:
    """Open a connection and run the client side of the handshake."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=v1proto.MAX_READ_LINE + 1),
            HANDSHAKE_TIMEOUT_S,
        )
    except (OSError, TimeoutError) as exc:
        raise PeerError("unreachable", f"{type(exc).__name__}") from None
    try:
        return await _client_handshake(
            reader,
            writer,
            circle_id=circle_id,
            secret=secret,
            node_id=node_id,
            listen_addr=listen_addr,
            offer_native=offer_native,
        )
    except BaseException:
        writer.close()
        raise


async def _client_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    circle_id: str,
    secret: str,
    node_id: str,
    listen_addr: str,
    offer_native: bool,
) -> Link:
    client_nonce = v1proto.nonce()
    hello: dict[str, Any] = {
        "t": "HELLO",
        "node_id": node_id,
        "circle_id": circle_id,
        "listen_addr": listen_addr,
        "nonce": client_nonce,
        "can_anchor": False,
    }
    if offer_native:
        hello["native"] = nativeproto.VERSION
    await _send(writer, hello)
    challenge = v1proto.expect(
        v1proto.decode(await _read_line(reader, HANDSHAKE_TIMEOUT_S), None), "CHALLENGE", nonce=str
    )
    server_nonce = challenge["nonce"]
    if len(server_nonce) != 32 or any(c not in "0123456789abcdef" for c in server_nonce):
        raise PeerError("frame", "CHALLENGE nonce must be 32 hex")
    token = crypto.handshake_token(secret, node_id, circle_id, server_nonce)
    await _send(writer, {"t": "HELLO_AUTH", "token": token})
    welcome = v1proto.expect(
        v1proto.decode(await _read_line(reader, HANDSHAKE_TIMEOUT_S), None), "WELCOME"
    )
    peer_id = _node_id(welcome.get("node_id"))
    link = Link(
        reader,
        writer,
        circle_id,
        secret,
        peer_id,
        is_client=True,
        native=False,
        peer_host=str(writer.get_extra_info("peername")[0]),
    )
    if offer_native and welcome.get("native") == nativeproto.VERSION:
        if not crypto.verify_native_server_proof(
            secret, peer_id, circle_id, client_nonce, welcome.get("proof")
        ):
            raise PeerError("auth", "the server's proof does not verify")
        link.native = True
        link.channel = nativeproto.Channel(
            crypto.native_session_key(secret, client_nonce, server_nonce), is_client=True
        )
    elif welcome.get("enc_ready") is True:
        link.v1_key = crypto.session_key(secret, client_nonce, server_nonce)
    return link
