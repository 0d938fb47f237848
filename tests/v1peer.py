"""An independent felund v1 peer, written only from the v1 wire spec.

This is the "other implementation" of our interop tests. It is written from
``/work/shared/spec/felund-v1-wire.md`` alone and imports nothing from the
``felund`` or ``services`` packages (only the standard library and
``cryptography``), so that a test passing against it checks our node against
the spec rather than against itself.

``V1Peer`` runs its own asyncio event loop in a background thread and exposes
synchronous methods, so plain pytest tests can drive it::

    peer = V1Peer(secret_hex)
    peer.start_server()              # listens on 127.0.0.1:<ephemeral>
    peer.post("hello")
    result = peer.sync_with("127.0.0.1", other_port)
    peer.stop()

Where the spec leaves something open, the most literal reading was chosen;
every such choice is marked ``SPEC CHOICE`` in a comment below.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

T = TypeVar("T")
Frame = dict[str, Any]

# --- limits -------------------------------------------------------------------

#: "The existing client refuses a plain frame longer than 16,384 bytes."
MAX_PLAIN_FRAME = 16_384
#: "... and uses a 30 s read timeout."
READ_TIMEOUT_S = 30.0
GCM_NONCE_BYTES = 12
GCM_TAG_BYTES = 16
#: Length of the base64 line that carries a MAX_PLAIN_FRAME-byte frame encrypted.
MAX_ENC_LINE = 4 * -(-(GCM_NONCE_BYTES + MAX_PLAIN_FRAME + GCM_TAG_BYTES) // 3)
# SPEC CHOICE (frame size, sending): the spec does not say whether the 16,384
# bytes count the newline, nor what limit applies to an encrypted line. We send
# conservatively: every line we write, *including* its "\n" and *after*
# encryption and base64, is at most 16,384 bytes, so it fits whichever way a
# receiver measures it.
SEND_LINE_BUDGET = MAX_PLAIN_FRAME - 1  # bytes before the "\n"
# SPEC CHOICE (frame size, receiving): we refuse (close) a plain line whose
# content, newline excluded, is longer than 16,384 bytes; an encrypted line may
# be as long as the base64 of a 16,384-byte frame, and its plaintext may not
# exceed 16,384 bytes.
STREAM_LIMIT = MAX_ENC_LINE + 2

# --- field rules (SPEC CHOICE where the spec gives no number) -----------------

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX64 = re.compile(r"[0-9a-f]{64}")
CHANNEL_RE = re.compile(r"[a-z0-9_-]{1,32}")
CONTROL_CHANNEL = "__control"
ENC_ALG = "AES-256-GCM"
ENC_KEY_ID = "epoch-0"
#: Exactly the keys of "A message on the wire".
WIRE_KEYS = (
    "msg_id",
    "circle_id",
    "channel_id",
    "author_node_id",
    "display_name",
    "created_ts",
    "text",
    "mac",
    "schema_version",
    "enc",
)
ENC_KEYS = frozenset({"alg", "key_id", "nonce", "ciphertext"})
# SPEC CHOICE: node_id is "an opaque string" (the vectors use "b7" and
# "node-b"); we accept 1-128 characters, the relay's upper bound.
MAX_NODE_ID_CHARS = 128
# SPEC CHOICE: the spec names no display_name limit; 256 characters is generous.
MAX_DISPLAY_NAME_CHARS = 256
# SPEC CHOICE: a message must fit in one frame, so its text cannot be longer.
MAX_TEXT_BYTES = MAX_PLAIN_FRAME
MAX_TS = 2**63 - 1


# --- errors -------------------------------------------------------------------


class ProtocolError(Exception):
    """The other side broke the v1 session; the connection is closed."""


class RemoteError(ProtocolError):
    """The other side answered ``{"t":"ERROR","err":...}``; ``str()`` is the err."""


class HandshakeError(Exception):
    """A synchronous handshake (``V1Peer.handshake``) ended in an ERROR frame."""


# --- identities and crypto, each straight from the spec -------------------------


def secret_bytes(secret_hex: str) -> bytes:
    """The 32 secret bytes of a 64-lowercase-hex circle secret."""
    if not HEX64.fullmatch(secret_hex):
        raise ValueError("a circle secret is 64 lowercase hex chars")
    return bytes.fromhex(secret_hex)


def circle_id_for(secret_hex: str) -> str:
    """First 24 hex chars of SHA-256(secret bytes)."""
    return hashlib.sha256(secret_bytes(secret_hex)).hexdigest()[:24]


def circle_hint_for(circle_id: str) -> str:
    """First 16 hex chars of SHA-256(circle_id as UTF-8 text)."""
    return hashlib.sha256(circle_id.encode("utf-8")).hexdigest()[:16]


def new_node_id() -> str:
    """First 24 hex chars of SHA-256 of 32 random bytes."""
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()[:24]


def new_msg_id(node_id: str, created_ts: int) -> str:
    """First 32 hex chars of SHA-256 of ``node_id|created_ts|16 random hex``."""
    material = f"{node_id}|{created_ts}|{secrets.token_hex(8)}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


def _hkdf(key: bytes, salt: bytes | None, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(key)


def compact_json(obj: object) -> bytes:
    """Compact JSON. The vectors show Python's default ``ensure_ascii`` escaping."""
    return json.dumps(obj, separators=(",", ":")).encode("ascii")


def message_mac(secret: bytes, msg: Mapping[str, Any]) -> str:
    """Hex HMAC-SHA256 over ``msg_id|circle_id|channel_id|author|display_name|ts|text``."""
    material = "|".join(
        str(msg[k])
        for k in (
            "msg_id",
            "circle_id",
            "channel_id",
            "author_node_id",
            "display_name",
            "created_ts",
            "text",
        )
    )
    return hmac.new(secret, material.encode("utf-8"), hashlib.sha256).hexdigest()


def message_key(secret: bytes) -> bytes:
    """HKDF-SHA256(secret, no salt, info ``felund-msg-v1``), 32 bytes."""
    return _hkdf(secret, None, b"felund-msg-v1")


def _message_ad(msg: Mapping[str, Any]) -> bytes:
    fields = ("msg_id", "circle_id", "channel_id", "author_node_id", "created_ts")
    return "|".join(str(msg[k]) for k in fields).encode("utf-8")


def encrypt_message(
    secret: bytes,
    header: Mapping[str, Any],
    display_name: str,
    text: str,
    nonce: bytes | None = None,
) -> dict[str, str]:
    """The ``enc`` object for a message whose header fields are in ``header``."""
    nonce = secrets.token_bytes(GCM_NONCE_BYTES) if nonce is None else nonce
    plaintext = compact_json({"display_name": display_name, "text": text})
    ciphertext = AESGCM(message_key(secret)).encrypt(nonce, plaintext, _message_ad(header))
    return {
        "alg": ENC_ALG,
        "key_id": ENC_KEY_ID,
        "nonce": base64.b64encode(nonce).decode("ascii"),
        "ciphertext": base64.b64encode(ciphertext).decode("ascii"),
    }


def decrypt_message(secret: bytes, msg: Mapping[str, Any]) -> tuple[str, str]:
    """(display_name, text) from a message's ``enc``; ValueError if it does not open."""
    enc = msg["enc"]
    try:
        nonce = base64.b64decode(enc["nonce"], validate=True)
        ciphertext = base64.b64decode(enc["ciphertext"], validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError("enc is not base64") from exc
    if len(nonce) != GCM_NONCE_BYTES or len(ciphertext) < GCM_TAG_BYTES:
        raise ValueError("enc nonce or ciphertext has the wrong length")
    try:
        plaintext = AESGCM(message_key(secret)).decrypt(nonce, ciphertext, _message_ad(msg))
    except InvalidTag as exc:
        raise ValueError("enc does not decrypt") from exc
    try:
        fields = json.loads(plaintext)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("enc plaintext is not JSON") from exc
    if not isinstance(fields, dict):
        raise ValueError("enc plaintext is not an object")
    display_name, text = fields.get("display_name"), fields.get("text")
    if not isinstance(display_name, str) or not isinstance(text, str):
        raise ValueError("enc plaintext lacks display_name/text strings")
    return display_name, text


def handshake_token(secret: bytes, node_id: str, circle_id: str, server_nonce: str) -> str:
    """Hex HMAC-SHA256(secret, ``node_id|circle_id|server_nonce``)."""
    material = f"{node_id}|{circle_id}|{server_nonce}".encode()
    return hmac.new(secret, material, hashlib.sha256).hexdigest()


def session_key(secret: bytes, client_nonce: str, server_nonce: str) -> bytes:
    """HKDF-SHA256(secret, salt client_nonce bytes ‖ server_nonce bytes, ``felund-session-v1``)."""
    salt = bytes.fromhex(client_nonce) + bytes.fromhex(server_nonce)
    return _hkdf(secret, salt, b"felund-session-v1")


def seal_frame(key: bytes, frame: Mapping[str, Any], nonce: bytes | None = None) -> bytes:
    """One encrypted line (without ``\\n``): base64(nonce ‖ AES-GCM(compact JSON)), no AD."""
    nonce = secrets.token_bytes(GCM_NONCE_BYTES) if nonce is None else nonce
    sealed = AESGCM(key).encrypt(nonce, compact_json(frame), None)
    return base64.b64encode(nonce + sealed)


def open_frame(key: bytes, line: bytes | str) -> Frame:
    """The frame in one encrypted line; ProtocolError if it does not open."""
    try:
        raw = base64.b64decode(line.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("encrypted line is not base64") from exc
    if len(raw) < GCM_NONCE_BYTES + GCM_TAG_BYTES:
        raise ProtocolError("encrypted line too short")
    try:
        plaintext = AESGCM(key).decrypt(raw[:GCM_NONCE_BYTES], raw[GCM_NONCE_BYTES:], None)
    except InvalidTag as exc:
        raise ProtocolError("encrypted line does not decrypt") from exc
    if len(plaintext) > MAX_PLAIN_FRAME:
        raise ProtocolError("decrypted frame longer than 16384 bytes")
    return _parse_frame(plaintext)


def _parse_frame(data: bytes) -> Frame:
    try:
        frame = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError("frame is not JSON") from exc
    if not isinstance(frame, dict) or not isinstance(frame.get("t"), str):
        raise ProtocolError("frame is not an object with a string t")
    return frame


def encode_line(frame: Mapping[str, Any], key: bytes | None) -> bytes:
    """The bytes of one line (without ``\\n``), plain or encrypted."""
    return compact_json(frame) if key is None else seal_frame(key, frame)


def line_length(plain_len: int, encrypted: bool) -> int:
    """Length of the line carrying a frame of ``plain_len`` JSON bytes."""
    if not encrypted:
        return plain_len
    return 4 * -(-(GCM_NONCE_BYTES + plain_len + GCM_TAG_BYTES) // 3)


def fit_items(
    make_frame: Callable[[list[T]], Frame],
    items: Iterable[T],
    encrypted: bool,
    budget: int = SEND_LINE_BUDGET,
) -> list[T]:
    """The items, in order, that fit in one line of ``make_frame(items)``.

    SPEC CHOICE: "send only what fits (newest first)": items are offered in
    the caller's order (newest first) and one that would overflow the line is
    skipped while later, smaller ones may still fit, so a single oversized
    message cannot block every later round.
    """
    size = len(compact_json(make_frame([])))
    chosen: list[T] = []
    for item in items:
        extra = len(compact_json(item)) + (1 if chosen else 0)
        if line_length(size + extra, encrypted) <= budget:
            chosen.append(item)
            size += extra
    return chosen


def is_nonce(value: object) -> bool:
    return isinstance(value, str) and HEX32.fullmatch(value) is not None


# --- message validation -------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """Outcome of checking a received message: a drop reason, or the message."""

    reason: str | None
    message: Frame | None = None
    display_name: str = ""
    text: str = ""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_message(secret: bytes, circle_id: str, msg: object) -> Checked:
    """Apply the spec's acceptance rules to one received wire message.

    Types and lengths first ("validate every field's type and length before
    accepting a message, even one whose MAC verifies"), then the circle, then
    the authenticator: with ``enc`` it must decrypt (no fallback to ``mac``),
    without it the ``mac`` must verify.
    """
    if not isinstance(msg, dict):
        return Checked("not_object")
    if set(msg) - set(WIRE_KEYS):
        # "Unknown keys make the existing Python client drop the message."
        return Checked("unknown_key")
    msg = dict(msg)
    # SPEC CHOICE: channel_id is the one key with a stated default ("general");
    # every other key must be present ("send exactly these keys").
    msg.setdefault("channel_id", "general")
    if set(WIRE_KEYS) - set(msg):
        return Checked("missing_key")
    msg = {k: msg[k] for k in WIRE_KEYS}
    # SPEC CHOICE: msg_id is "32 hex chars" (the identities table); we hold
    # it to exactly that (lowercase, as all hex in the vectors).
    if not isinstance(msg["msg_id"], str) or not HEX32.fullmatch(msg["msg_id"]):
        return Checked("bad_msg_id")
    if not isinstance(msg["circle_id"], str):
        return Checked("bad_circle_id")
    channel = msg["channel_id"]
    if not isinstance(channel, str) or not (
        channel == CONTROL_CHANNEL
        or (CHANNEL_RE.fullmatch(channel) and not channel.startswith("__"))
    ):
        return Checked("bad_channel_id")
    author = msg["author_node_id"]
    if not isinstance(author, str) or not 1 <= len(author) <= MAX_NODE_ID_CHARS:
        return Checked("bad_author_node_id")
    if not _valid_display_name(msg["display_name"]):
        return Checked("bad_display_name")
    if not _is_int(msg["created_ts"]) or not 0 <= msg["created_ts"] <= MAX_TS:
        return Checked("bad_created_ts")
    if not _valid_text(msg["text"]):
        return Checked("bad_text")
    if not isinstance(msg["mac"], str) or len(msg["mac"]) > 128:
        return Checked("bad_mac_type")
    # SPEC CHOICE: schema_version must be 1 or 2; the acceptance rule keys on
    # whether enc is present, so a 1/2 that disagrees with enc is not checked.
    if not _is_int(msg["schema_version"]) or msg["schema_version"] not in (1, 2):
        return Checked("bad_schema_version")
    enc = msg["enc"]
    # SPEC CHOICE: the enc object is exactly the four keys the spec lists, all
    # strings, with alg AES-256-GCM; key_id is not checked (only epoch-0
    # exists; a message under another key just fails to decrypt).
    if enc is not None and (
        not isinstance(enc, dict)
        or set(enc) != ENC_KEYS
        or not all(isinstance(v, str) for v in enc.values())
        or enc["alg"] != ENC_ALG
    ):
        return Checked("bad_enc")
    if msg["circle_id"] != circle_id:
        return Checked("wrong_circle")
    if enc is not None:
        try:
            display_name, text = decrypt_message(secret, msg)
        except ValueError:
            return Checked("enc_failed")
        if not _valid_display_name(display_name) or not _valid_text(text):
            return Checked("bad_enc_plaintext")
        return Checked(None, msg, display_name, text)
    if not hmac.compare_digest(msg["mac"].encode(), message_mac(secret, msg).encode()):
        return Checked("bad_mac")
    return Checked(None, msg, msg["display_name"], msg["text"])


def _valid_display_name(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_DISPLAY_NAME_CHARS


def _valid_text(value: object) -> bool:
    return isinstance(value, str) and len(value.encode("utf-8", "surrogatepass")) <= MAX_TEXT_BYTES


# --- session plumbing -----------------------------------------------------------


@dataclass
class SessionResult:
    """What one v1 session (either role) did."""

    role: str  # "client" or "server"
    ok: bool = False
    error: str | None = None
    remote: str = ""  # "ip:port" of the socket's other end
    remote_node_id: str | None = None
    encrypted: bool = False
    offered: int = 0  # ids in our MSGS_HAVE
    requested: int = 0  # ids in our MSGS_REQ
    sent: int = 0  # messages in our MSGS_SEND
    received: int = 0  # new messages accepted from their MSGS_SEND
    frames: tuple[str, ...] = ()  # frame types received in this session, in order


class _Conn:
    """One line-framed connection, plain until ``key`` is set."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        read_timeout: float,
        on_frame: Callable[[str], None],
        on_line: Callable[[int], None],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.read_timeout = read_timeout
        self.key: bytes | None = None
        self.frames: list[str] = []
        self._on_frame = on_frame
        self._on_line = on_line

    @property
    def encrypted(self) -> bool:
        return self.key is not None

    async def send(self, frame: Frame) -> None:
        line = encode_line(frame, self.key)
        self._on_line(len(line) + 1)
        self.writer.write(line + b"\n")
        await self.writer.drain()

    async def recv(self) -> Frame:
        try:
            line = await asyncio.wait_for(self.reader.readuntil(b"\n"), self.read_timeout)
        except asyncio.IncompleteReadError as exc:
            raise ProtocolError("connection closed by the other side") from exc
        except asyncio.LimitOverrunError as exc:
            raise ProtocolError("line too long") from exc
        except TimeoutError as exc:
            raise ProtocolError("read timeout") from exc
        body = line.rstrip(b"\r\n")
        if self.key is None:
            if len(body) > MAX_PLAIN_FRAME:
                raise ProtocolError("plain frame longer than 16384 bytes")
            frame = _parse_frame(body)
        else:
            if len(body) > MAX_ENC_LINE:
                raise ProtocolError("encrypted line too long")
            frame = open_frame(self.key, body)
        self.frames.append(frame["t"])
        self._on_frame(frame["t"])
        return frame

    async def expect(self, t: str) -> Frame:
        frame = await self.recv()
        if frame["t"] == "ERROR" and t != "ERROR":
            raise RemoteError(str(frame.get("err")))
        if frame["t"] != t:
            raise ProtocolError(f"expected {t}, got {frame['t']}")
        return frame

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)


def _str_ids(value: object) -> list[str]:
    """The string entries of a msg_ids list, deduplicated, in order."""
    # Tolerant reading, as a .get() based implementation would: a missing
    # list is empty; a non-list is a protocol error; non-string entries skip.
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProtocolError("msg_ids is not a list")
    return list(dict.fromkeys(v for v in value if isinstance(v, str)))


def _addr_port(addr: object) -> tuple[str, int] | None:
    if not isinstance(addr, str) or ":" not in addr:
        return None
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


# --- raw synchronous connection (for crafted frames in tests) -------------------


class RawConn:
    """A blocking v1 connection for tests that craft frames by hand."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self._file = self.sock.makefile("rb")
        self.key: bytes | None = None

    def send(self, frame: Mapping[str, Any]) -> None:
        self.send_line(encode_line(frame, self.key))

    def send_line(self, data: bytes) -> None:
        """Send raw bytes followed by ``\\n`` (no encoding, no size check)."""
        self.sock.sendall(data + b"\n")

    def recv(self) -> Frame | None:
        """The next frame, or None once the other side closed the connection."""
        try:
            line = self._file.readline(STREAM_LIMIT)
        except ConnectionResetError:
            return None
        if not line:
            return None
        body = line.rstrip(b"\r\n")
        return _parse_frame(body) if self.key is None else open_frame(self.key, body)

    def closed_by_peer(self) -> bool:
        """True if the other side closes (EOF or reset) before sending anything."""
        return self.recv() is None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
            self.sock.close()

    def __enter__(self) -> RawConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the peer -------------------------------------------------------------------


class V1Peer:
    """A felund v1 node of one circle: message store, TCP server and client.

    Thread model: an asyncio loop in a daemon thread does all network work;
    the public methods are synchronous and safe to call from the test thread.
    Always ``stop()`` it (or use it as a context manager).
    """

    def __init__(  # noqa: PLR0917 - the positional order the interop tests use
        self,
        secret_hex: str,
        node_id: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        encrypt_session: bool = True,
        encrypt_messages: bool = False,
        read_timeout: float = READ_TIMEOUT_S,
    ) -> None:
        self.secret_hex = secret_hex
        self.secret = secret_bytes(secret_hex)
        self.circle_id = circle_id_for(secret_hex)
        self.node_id = node_id if node_id is not None else new_node_id()
        self.host = host
        self.port = port
        self.encrypt_session = encrypt_session
        self.encrypt_messages = encrypt_messages
        self.read_timeout = read_timeout
        #: Why received messages were dropped (reason -> count).
        self.dropped: Counter[str] = Counter()
        #: Received messages we already had (not a drop).
        self.duplicates = 0
        #: Every frame type received, both roles, in arrival order.
        self.frames_seen: list[str] = []
        #: One record per session served by start_server().
        self.server_sessions: list[SessionResult] = []
        #: One record per sync_with() round.
        self.client_sessions: list[SessionResult] = []
        #: Longest line we wrote, "\n" included (must stay <= 16384).
        self.max_line_sent = 0
        self._store: dict[str, Frame] = {}
        self._plain: dict[str, tuple[str, str]] = {}
        self._peers: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name=f"v1peer-{self.node_id[:8]}", daemon=True
            )
            thread.start()
            self._loop, self._thread = loop, thread
        return self._loop

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def start_server(self) -> int:
        """Listen on host:port (0 = ephemeral); returns and sets ``self.port``."""
        if self._server is not None:
            return self.port

        async def start() -> asyncio.Server:
            return await asyncio.start_server(
                self._handle, self.host, self.port, limit=STREAM_LIMIT
            )

        self._server = self._run(start(), 10.0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def listen_addr(self) -> str:
        """``host:port`` of our server, or "" if we do not listen."""
        return f"{self.host}:{self.port}" if self._server is not None else ""

    def stop(self) -> None:
        """Close the server, cancel sessions in flight and end the loop thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        with contextlib.suppress(Exception):
            self._run(shutdown(), 10.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10.0)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = self._server = None

    def __enter__(self) -> V1Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- message store -----------------------------------------------------------

    def post(
        self,
        text: str,
        channel_id: str = "general",
        display_name: str = "v1peer",
        *,
        created_ts: int | None = None,
        encrypt: bool | None = None,
    ) -> Frame:
        """Create, store and return a valid wire message authored by this peer.

        schema_version 1 with a MAC, or (``encrypt_messages`` / ``encrypt=True``)
        schema_version 2 with ``enc``.
        """
        ts = int(time.time()) if created_ts is None else created_ts
        header: Frame = {
            "msg_id": new_msg_id(self.node_id, ts),
            "circle_id": self.circle_id,
            "channel_id": channel_id,
            "author_node_id": self.node_id,
            "created_ts": ts,
        }
        if self.encrypt_messages if encrypt is None else encrypt:
            # SPEC CHOICE: "the plaintext fields then come from enc", so the
            # wire display_name/text of an encrypted message carry nothing: we
            # send "" for both and "" for mac (the mac is not consulted when
            # enc is present, and a MAC over "" would authenticate nothing).
            enc = encrypt_message(self.secret, header, display_name, text)
            msg = self._wire(header, display_name="", text="", mac="", schema_version=2, enc=enc)
        else:
            msg = self._wire(
                header, display_name=display_name, text=text, mac="", schema_version=1, enc=None
            )
            msg["mac"] = message_mac(self.secret, msg)
        with self._lock:
            self._store[msg["msg_id"]] = msg
            self._plain[msg["msg_id"]] = (display_name, text)
        return dict(msg)

    @staticmethod
    def _wire(
        header: Frame,
        *,
        display_name: str,
        text: str,
        mac: str,
        schema_version: int,
        enc: dict[str, str] | None,
    ) -> Frame:
        return {
            "msg_id": header["msg_id"],
            "circle_id": header["circle_id"],
            "channel_id": header["channel_id"],
            "author_node_id": header["author_node_id"],
            "display_name": display_name,
            "created_ts": header["created_ts"],
            "text": text,
            "mac": mac,
            "schema_version": schema_version,
            "enc": enc,
        }

    def receive(self, msg: object) -> bool:
        """Check one wire message as if it had arrived; True if newly stored."""
        checked = check_message(self.secret, self.circle_id, msg)
        if checked.reason is not None or checked.message is None:
            self.dropped[checked.reason or "unknown"] += 1
            return False
        with self._lock:
            msg_id = checked.message["msg_id"]
            if msg_id in self._store:
                self.duplicates += 1
                return False
            self._store[msg_id] = checked.message
            self._plain[msg_id] = (checked.display_name, checked.text)
        return True

    def inject_raw(self, msg: Frame) -> None:
        """Store a message *unchecked*, e.g. a malformed one to offer a node under test."""
        with self._lock:
            self._store[str(msg.get("msg_id"))] = dict(msg)

    def messages(self) -> list[Frame]:
        """Every stored wire message, newest first."""
        with self._lock:
            return [dict(m) for m in self._newest_first()]

    def texts(self, channel_id: str | None = None) -> set[str]:
        """Plaintext of every stored message (enc messages decrypted)."""
        with self._lock:
            return {
                text
                for msg_id, (_, text) in self._plain.items()
                if channel_id is None or self._store[msg_id].get("channel_id") == channel_id
            }

    def plaintext(self, msg_id: str) -> tuple[str, str] | None:
        """(display_name, text) of a stored message."""
        with self._lock:
            return self._plain.get(msg_id)

    def has(self, msg_id: str) -> bool:
        with self._lock:
            return msg_id in self._store

    def _newest_first(self) -> list[Frame]:
        def order(m: Frame) -> tuple[int, str]:
            ts = m.get("created_ts")
            return (ts if isinstance(ts, int) else 0, str(m.get("msg_id")))

        return sorted(self._store.values(), key=order, reverse=True)

    # -- peers -------------------------------------------------------------------

    def peers(self) -> dict[str, dict[str, Any]]:
        """Peers learned: node_id -> {"node_id", "addr", "last_seen"}."""
        with self._lock:
            return {k: dict(v) for k, v in self._peers.items()}

    def add_peer(self, node_id: str, addr: str, last_seen: int | None = None) -> None:
        seen = int(time.time()) if last_seen is None else last_seen
        with self._lock:
            old = self._peers.get(node_id)
            if old is None or seen >= old["last_seen"]:
                self._peers[node_id] = {"node_id": node_id, "addr": addr, "last_seen": seen}

    def _learn_peers(self, entries: object) -> None:
        if entries is None:
            return
        if not isinstance(entries, list):
            raise ProtocolError("peers is not a list")
        for entry in entries:
            if not isinstance(entry, dict):
                self.dropped["bad_peer"] += 1
                continue
            node_id, addr, seen = entry.get("node_id"), entry.get("addr"), entry.get("last_seen")
            # SPEC CHOICE: last_seen is not typed by the spec; we accept int or
            # float Unix seconds and send ints (like created_ts).
            if (
                not isinstance(node_id, str)
                or not 1 <= len(node_id) <= MAX_NODE_ID_CHARS
                or _addr_port(addr) is None
                or not isinstance(seen, int | float)
                or isinstance(seen, bool)
            ):
                self.dropped["bad_peer"] += 1
                continue
            if node_id != self.node_id:
                self.add_peer(node_id, str(addr), int(seen))

    # -- client ------------------------------------------------------------------

    def sync_with(self, host: str, port: int, *, timeout: float = 15.0) -> SessionResult:
        """Run one v1 client round against host:port; never raises on protocol errors."""
        return self._run(self._client_round(host, port, timeout), timeout + 5.0)

    async def _client_round(self, host: str, port: int, timeout: float) -> SessionResult:
        result = SessionResult(role="client", remote=f"{host}:{port}")
        conn: _Conn | None = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=STREAM_LIMIT), timeout
            )
            conn = self._conn(reader, writer)
            await asyncio.wait_for(self._client_session(conn, host, port, result), timeout)
            result.ok = True
        except Exception as exc:  # recorded, never raised: a round's outcome is data
            result.error = str(exc) or type(exc).__name__
        finally:
            if conn is not None:
                result.frames = tuple(conn.frames)
                await conn.close()
            self.client_sessions.append(result)
        return result

    async def _client_session(
        self, conn: _Conn, host: str, port: int, result: SessionResult
    ) -> None:
        client_nonce = secrets.token_hex(16) if self.encrypt_session else None
        hello: Frame = {
            "t": "HELLO",
            "node_id": self.node_id,
            "circle_id": self.circle_id,
            "listen_addr": self.listen_addr,
        }
        # SPEC CHOICE: without session encryption the client "did not send a
        # nonce": we leave the key out rather than sending "" or null.
        if client_nonce is not None:
            hello["nonce"] = client_nonce
        hello["can_anchor"] = False
        await conn.send(hello)
        challenge = await conn.expect("CHALLENGE")
        server_nonce = challenge.get("nonce")
        if not is_nonce(server_nonce):
            raise ProtocolError("CHALLENGE nonce is not 32 hex chars")
        assert isinstance(server_nonce, str)
        token = handshake_token(self.secret, self.node_id, self.circle_id, server_nonce)
        await conn.send({"t": "HELLO_AUTH", "token": token})
        welcome = await conn.expect("WELCOME")
        if welcome.get("enc_ready") is True:
            if client_nonce is None:
                raise ProtocolError("WELCOME enc_ready without a client nonce")
            conn.key = session_key(self.secret, client_nonce, server_nonce)
        # SPEC CHOICE: enc_ready false means a plain session, even if we sent a
        # nonce (the spec makes encryption depend on enc_ready alone).
        result.encrypted = conn.encrypted
        # SPEC CHOICE: the WELCOME's node_id names the server; we record it as
        # a peer at the address we dialled (we learn nothing else from it).
        remote_id = welcome.get("node_id")
        if isinstance(remote_id, str) and remote_id:
            result.remote_node_id = remote_id
            if remote_id != self.node_id:
                self.add_peer(remote_id, f"{host}:{port}")
        await self._exchange(conn, result)

    # -- server ------------------------------------------------------------------

    def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Conn:
        return _Conn(reader, writer, self.read_timeout, self.frames_seen.append, self._note_line)

    def _note_line(self, length: int) -> None:
        self.max_line_sent = max(self.max_line_sent, length)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        peername = writer.get_extra_info("peername")
        remote_ip = str(peername[0]) if peername else ""
        result = SessionResult(
            role="server", remote=f"{remote_ip}:{peername[1]}" if peername else ""
        )
        conn = self._conn(reader, writer)
        try:
            await self._server_session(conn, remote_ip, result)
            result.ok = True
        except Exception as exc:  # recorded in server_sessions for the test to see
            result.error = str(exc) or type(exc).__name__
        finally:
            result.frames = tuple(conn.frames)
            self.server_sessions.append(result)
            await conn.close()
            if task is not None:
                self._handlers.discard(task)

    async def _server_session(self, conn: _Conn, remote_ip: str, result: SessionResult) -> None:
        hello = await conn.expect("HELLO")
        node_id = hello.get("node_id")
        if hello.get("circle_id") != self.circle_id:
            await conn.send({"t": "ERROR", "err": "Unknown circle_id"})
            raise ProtocolError("Unknown circle_id")
        if not isinstance(node_id, str) or not 1 <= len(node_id) <= MAX_NODE_ID_CHARS:
            # SPEC CHOICE: the spec names no error for a malformed HELLO; we
            # answer ERROR "Bad HELLO" and close.
            await conn.send({"t": "ERROR", "err": "Bad HELLO"})
            raise ProtocolError("Bad HELLO")
        result.remote_node_id = node_id
        server_nonce = secrets.token_hex(16)
        await conn.send({"t": "CHALLENGE", "nonce": server_nonce})
        auth = await conn.expect("HELLO_AUTH")
        token = auth.get("token")
        expected = handshake_token(self.secret, node_id, self.circle_id, server_nonce)
        if not isinstance(token, str) or not hmac.compare_digest(
            token.encode("utf-8"), expected.encode()
        ):
            await conn.send({"t": "ERROR", "err": "Auth failed"})
            raise ProtocolError("Auth failed")
        # SPEC CHOICE: "the client sent a nonce" means a 32-hex-char nonce
        # (the only form whose bytes make the 32-byte salt); anything else
        # (absent, "", null, malformed) counts as no nonce: a plain session.
        client_nonce = hello.get("nonce")
        enc_ready = self.encrypt_session and is_nonce(client_nonce)
        await conn.send(
            {"t": "WELCOME", "node_id": self.node_id, "enc_ready": enc_ready, "can_anchor": False}
        )
        if enc_ready:
            assert isinstance(client_nonce, str)
            conn.key = session_key(self.secret, client_nonce, server_nonce)
        result.encrypted = conn.encrypted
        # "It learns a peer's address as (observed remote IP, advertised port)."
        # SPEC CHOICE: an empty or unparsable listen_addr teaches no address.
        advertised = _addr_port(hello.get("listen_addr"))
        if advertised is not None and node_id != self.node_id:
            self.add_peer(node_id, f"{remote_ip}:{advertised[1]}")
        await self._exchange(conn, result)

    # -- the exchange, same for both roles --------------------------------------

    async def _exchange(self, conn: _Conn, result: SessionResult) -> None:
        """Step 6: send PEERS, MSGS_HAVE; read theirs; REQ both ways; SEND both ways.

        SPEC CHOICE: the optional anchor exchange (step 7) is never started
        (we announce can_anchor false) and never served: we close right after
        reading the other side's MSGS_SEND.
        """
        enc = conn.encrypted
        with self._lock:
            known = sorted(self._peers.values(), key=lambda p: p["last_seen"], reverse=True)
            newest = self._newest_first()
        # SPEC CHOICE: PEERS lists the peers we know that have an address
        # (most recently seen first), not ourselves; the other side already
        # knows us from the HELLO / the address it dialled.
        entries = [dict(p) for p in known if p["addr"]]
        entries = fit_items(
            lambda e: {"t": "PEERS", "circle_id": self.circle_id, "peers": e}, entries, enc
        )
        await conn.send({"t": "PEERS", "circle_id": self.circle_id, "peers": entries})
        # SPEC CHOICE: MSGS_HAVE lists every id we hold in the circle (all
        # channels, __control included), newest first (created_ts, then
        # msg_id, descending), cut to what fits in one line.
        have = fit_items(self._ids_frame("MSGS_HAVE"), [str(m.get("msg_id")) for m in newest], enc)
        result.offered = len(have)
        await conn.send(self._ids_frame("MSGS_HAVE")(have))

        # "read the other's two": we accept PEERS and MSGS_HAVE in either
        # order, but nothing else and neither twice.
        got: dict[str, Frame] = {}
        for _ in range(2):
            frame = await conn.recv()
            t = frame["t"]
            if t == "ERROR":
                raise RemoteError(str(frame.get("err")))
            if t not in ("PEERS", "MSGS_HAVE") or t in got:
                raise ProtocolError(f"unexpected {t} frame")
            self._check_frame_circle(frame)
            got[t] = frame
        self._learn_peers(got["PEERS"].get("peers"))
        their_ids = _str_ids(got["MSGS_HAVE"].get("msg_ids"))

        # MSGS_REQ: the ids I lack, in the order they offered them.
        with self._lock:
            lacking = [i for i in their_ids if i not in self._store]
        wanted = fit_items(self._ids_frame("MSGS_REQ"), lacking, enc)
        result.requested = len(wanted)
        await conn.send(self._ids_frame("MSGS_REQ")(wanted))
        req = await conn.expect("MSGS_REQ")
        self._check_frame_circle(req)
        asked = set(_str_ids(req.get("msg_ids")))

        # MSGS_SEND: the messages they asked for that we hold, newest first.
        with self._lock:
            offer = [dict(m) for m in self._newest_first() if m.get("msg_id") in asked]
        send = fit_items(
            lambda ms: {"t": "MSGS_SEND", "circle_id": self.circle_id, "messages": ms},
            offer,
            enc,
        )
        result.sent = len(send)
        await conn.send({"t": "MSGS_SEND", "circle_id": self.circle_id, "messages": send})
        got_send = await conn.expect("MSGS_SEND")
        self._check_frame_circle(got_send)
        messages = got_send.get("messages")
        if messages is None:
            messages = []
        if not isinstance(messages, list):
            raise ProtocolError("messages is not a list")
        # SPEC CHOICE: every valid message in their MSGS_SEND is accepted,
        # requested or not (the spec does not restrict it to the request).
        result.received = sum(1 for m in messages if self.receive(m))

    def _ids_frame(self, t: str) -> Callable[[list[str]], Frame]:
        return lambda ids: {"t": t, "circle_id": self.circle_id, "msg_ids": ids}

    def _check_frame_circle(self, frame: Frame) -> None:
        # SPEC CHOICE: a frame's circle_id must be ours when present; a frame
        # without one is read tolerantly (as .get() would).
        if "circle_id" in frame and frame["circle_id"] != self.circle_id:
            raise ProtocolError(f"{frame['t']} for another circle")

    # -- hand-driven handshake ---------------------------------------------------

    def handshake(
        self,
        host: str,
        port: int,
        *,
        token: str | None = None,
        encrypt: bool | None = None,
        extra_hello: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
    ) -> tuple[RawConn, Frame]:
        """Blocking client handshake up to WELCOME; returns (connection, WELCOME).

        The connection is switched to session encryption if WELCOME says
        enc_ready, ready for step 6 by hand. ``token`` overrides the
        HELLO_AUTH token (to test a wrong one); ``extra_hello`` adds keys to
        HELLO. Raises HandshakeError(err) on an ERROR frame.
        """
        conn = RawConn(host, port, timeout)
        try:
            use_nonce = self.encrypt_session if encrypt is None else encrypt
            client_nonce = secrets.token_hex(16) if use_nonce else None
            hello: Frame = {
                "t": "HELLO",
                "node_id": self.node_id,
                "circle_id": self.circle_id,
                "listen_addr": self.listen_addr,
            }
            if client_nonce is not None:
                hello["nonce"] = client_nonce
            hello["can_anchor"] = False
            hello.update(extra_hello or {})
            conn.send(hello)
            challenge = self._raw_expect(conn, "CHALLENGE")
            server_nonce = str(challenge.get("nonce"))
            if token is None:
                token = handshake_token(self.secret, self.node_id, self.circle_id, server_nonce)
            conn.send({"t": "HELLO_AUTH", "token": token})
            welcome = self._raw_expect(conn, "WELCOME")
            if welcome.get("enc_ready") is True and client_nonce is not None:
                conn.key = session_key(self.secret, client_nonce, server_nonce)
        except BaseException:
            conn.close()
            raise
        return conn, welcome

    @staticmethod
    def _raw_expect(conn: RawConn, t: str) -> Frame:
        frame = conn.recv()
        if frame is None:
            raise HandshakeError("connection closed")
        if frame["t"] == "ERROR":
            raise HandshakeError(str(frame.get("err")))
        if frame["t"] != t:
            raise HandshakeError(f"expected {t}, got {frame['t']}")
        return frame

    # -- waiting -----------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Poll ``predicate`` until true or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def wait_for_texts(self, texts: Iterable[str], timeout: float = 10.0) -> bool:
        wanted = set(texts)
        return self.wait_for(lambda: wanted <= self.texts(), timeout)
