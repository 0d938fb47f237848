"""The relay HTTP API of the v1 wire spec: limits, error codes, request parsing (sans-IO).

Everything here takes decoded JSON (or query strings) and returns frozen
records, or raises ``ApiError`` with the status and code the client gets in
``{"ok": false, "code": ..., "message": ...}``. No sockets, no clock, no
database: ``felund.relay.server.app`` does the I/O around it.

Error codes (status): INVALID_REQUEST, INVALID_MESSAGE, BATCH_TOO_LARGE,
CIRCLE_MISMATCH, EXPIRED_TIMESTAMP (400); INVALID_SIGNATURE,
SIGNATURE_REQUIRED, SIGNING_KEY_MISMATCH (401); NOT_FOUND (404);
METHOD_NOT_ALLOWED (405); REQUEST_TIMEOUT (408); NONCE_REPLAY (409);
PAYLOAD_TOO_LARGE (413); RATE_LIMITED (429, with Retry-After); INTERNAL
(500); UNAVAILABLE, DATABASE_UNAVAILABLE (503, with Retry-After).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import orjson

from felund.errors import ApiError, InvalidMessage
from felund.v1 import ids
from felund.v1.wire import parse_message

API_VERSION: Final = "felund-relay/1"

# --- limits -------------------------------------------------------------------
# 50 messages at the wire format's own limits (8000 chars of text, \u-escaped
# and sealed) come to about 3.2 MB, and the existing clients batch by count,
# not size: a smaller cap would refuse batches they legitimately send.
MAX_BODY_BYTES: Final = 4 * 1024 * 1024
MAX_BATCH: Final = 50  # messages per POST /v1/messages
DEFAULT_PAGE: Final = 200  # GET /v1/messages limit
MAX_PAGE: Final = 500
# At most this many messages of one circle get the same stored second; the
# rest of a burst goes to the next second. Two whole seconds then always fit
# in a page of 200, which is what lets a v1 client page without skipping.
SECOND_CAP: Final = 100
RETENTION_S: Final = 30 * 24 * 3600
TIMESTAMP_WINDOW_S: Final = 300
MIN_TTL_S: Final = 30
MAX_TTL_S: Final = 600
DEFAULT_TTL_S: Final = 120
MAX_ENDPOINTS: Final = 16
MAX_HOST_CHARS: Final = 255
MAX_CAPABILITIES_BYTES: Final = 1024
MAX_NODE_KEYS: Final = 4  # signing keys one node_id may register for one circle_hint
MAX_REALMS: Final = 1024  # realms in successions per circle_hint: re-keys a circle may make
DEFAULT_PEERS: Final = 50
MAX_PEERS: Final = 200
SIGNAL_TYPES: Final = frozenset(
    {"offer", "answer", "candidate", "media-offer", "media-answer", "media-candidate"}
)
MAX_SIGNAL_PAYLOAD_BYTES: Final = 64 * 1024
MIN_SIGNAL_TTL_S: Final = 10
MAX_SIGNAL_TTL_S: Final = 120  # offers and answers
MAX_CANDIDATE_TTL_S: Final = 60  # ICE candidates
SIGNAL_PAGE: Final = 200
SIGNAL_RATE: Final = 20  # posts per node ...
SIGNAL_WINDOW_S: Final = 10.0  # ... per this many seconds
# Live signals held at once (expired ones are dropped before counting): whoever
# posts, the table stays bounded, and a flood toward one node or one circle
# fills only its own share. At most MAX_SIGNALS_TOTAL * MAX_SIGNAL_PAYLOAD_BYTES
# of payload (256 MiB) on disk, in practice far less (an SDP is a few KiB).
MAX_SIGNALS_PER_NODE: Final = SIGNAL_PAGE  # queued for one to_node_id: one GET takes them all
MAX_SIGNALS_PER_CIRCLE: Final = 2000  # 13 nodes of a full call, 20 posts per 10 s, 60-120 s
MAX_SIGNALS_TOTAL: Final = 4096
WS_BACKLOG_S: Final = 120
WS_BACKLOG_MAX: Final = 1000
WS_FRAME_MESSAGES: Final = 200
WS_FRAME_BYTES: Final = 256 * 1024  # a frame holds at least one message, whatever its size
WS_QUEUE_BYTES: Final = 2 * 1024 * 1024  # one feed connection may fall this far behind
WS_BACKLOG_BYTES: Final = 1024 * 1024  # at most this much backlog for a new feed connection
SEND_BUDGET_BYTES: Final = 128 * 1024 * 1024  # queued for every feed connection together
WS_PING_S: Final = 15.0
WS_MAX_CLIENT_FRAME: Final = 4096

# --- error codes ----------------------------------------------------------------
INVALID_REQUEST: Final = "INVALID_REQUEST"
INVALID_MESSAGE: Final = "INVALID_MESSAGE"
BATCH_TOO_LARGE: Final = "BATCH_TOO_LARGE"
CIRCLE_MISMATCH: Final = "CIRCLE_MISMATCH"
EXPIRED_TIMESTAMP: Final = "EXPIRED_TIMESTAMP"
INVALID_SIGNATURE: Final = "INVALID_SIGNATURE"
SIGNATURE_REQUIRED: Final = "SIGNATURE_REQUIRED"
SIGNING_KEY_MISMATCH: Final = "SIGNING_KEY_MISMATCH"
NOT_FOUND: Final = "NOT_FOUND"
METHOD_NOT_ALLOWED: Final = "METHOD_NOT_ALLOWED"
REQUEST_TIMEOUT: Final = "REQUEST_TIMEOUT"
NONCE_REPLAY: Final = "NONCE_REPLAY"
PAYLOAD_TOO_LARGE: Final = "PAYLOAD_TOO_LARGE"
RATE_LIMITED: Final = "RATE_LIMITED"
INTERNAL: Final = "INTERNAL"
UNAVAILABLE: Final = "UNAVAILABLE"
DATABASE_UNAVAILABLE: Final = "DATABASE_UNAVAILABLE"  # the relay's database is down (503)
# A circle re-keyed (a member removed): its new realm succeeds the old one.
EPOCH_ENDED: Final = "EPOCH_ENDED"  # a post signed with a key whose realm has a successor
EPOCH_KEY_REQUIRED: Final = "EPOCH_KEY_REQUIRED"  # an unsigned post to a re-keyed room
BAD_SUCCESSION: Final = "BAD_SUCCESSION"  # a succession proof that does not verify
UNKNOWN_PREDECESSOR: Final = "UNKNOWN_PREDECESSOR"  # no registered key has that key_id
SIGNALS_FULL: Final = "SIGNALS_FULL"  # a signal queue at its bound (node, circle or relay)
NOT_ADDRESSEE: Final = "NOT_ADDRESSEE"  # a signed GET /v1/signal for another node's signals

_STATUS: Final = {
    INVALID_REQUEST: 400,
    INVALID_MESSAGE: 400,
    BATCH_TOO_LARGE: 400,
    CIRCLE_MISMATCH: 400,
    EXPIRED_TIMESTAMP: 400,
    INVALID_SIGNATURE: 401,
    SIGNATURE_REQUIRED: 401,
    SIGNING_KEY_MISMATCH: 401,
    NOT_FOUND: 404,
    METHOD_NOT_ALLOWED: 405,
    REQUEST_TIMEOUT: 408,
    NONCE_REPLAY: 409,
    PAYLOAD_TOO_LARGE: 413,
    RATE_LIMITED: 429,
    INTERNAL: 500,
    UNAVAILABLE: 503,
    DATABASE_UNAVAILABLE: 503,
    EPOCH_ENDED: 403,
    EPOCH_KEY_REQUIRED: 403,
    BAD_SUCCESSION: 403,
    UNKNOWN_PREDECESSOR: 409,
    SIGNALS_FULL: 429,
    NOT_ADDRESSEE: 403,
}
ERROR_CODES: Final = frozenset(_STATUS)  # bounded: usable as a metric label


def http_status(code: str) -> int:
    """The HTTP status of an error code."""
    return _STATUS[code]


def invalid(message: str) -> ApiError:
    """A validation error (400 INVALID_REQUEST)."""
    return ApiError(INVALID_REQUEST, message)


# --- records ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Registration:
    """A POST /v1/register body, normalised."""

    node_id: str
    circle_hint: str
    endpoints: tuple[dict[str, Any], ...]
    capabilities: dict[str, Any]
    ttl_s: int
    signing_key: str | None
    succeeds: tuple[str, str] | None = None  # (old realm's key id, proof)


class IncomingMessage(NamedTuple):
    """One message of a POST: its id, author and the JSON text stored and served as is
    (a tuple: one is made per message, at half a frozen dataclass's cost)."""

    msg_id: str
    author_node_id: str
    payload: str


@dataclass(frozen=True, slots=True)
class MessageBatch:
    """A POST /v1/messages body."""

    circle_hint: str
    messages: tuple[IncomingMessage, ...]


@dataclass(frozen=True, slots=True)
class SignalPost:
    """A POST /v1/signal body."""

    session_id: str
    from_node_id: str
    to_node_id: str
    circle_hint: str
    type: str
    payload: str
    ttl_s: int


# --- field checks -------------------------------------------------------------------
_HINT_RE = re.compile(r"[A-Za-z0-9_-]{8,128}")
_NODE_RE = re.compile(r"[A-Za-z0-9_.-]{8,128}")
_WS_NODE_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_SESSION_RE = re.compile(r"[\x21-\x7e]{8,256}")  # printable ASCII, no spaces
_KEY_RE = re.compile(r"[0-9a-f]{64}")
_KEY_ID_RE = re.compile(r"[0-9a-f]{32}")
_INT_RE = re.compile(r"-?[0-9]{1,18}")
_TRANSPORTS = ("tcp", "ws")
_FAMILIES = ("ipv4", "ipv6")
_NATS = ("unknown", "open", "restricted", "symmetric")
DEFAULT_CAPABILITIES: Final = {"relay": False, "transport": ["tcp"]}


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is an int subclass and is not a number here


def circle_hint_field(value: object, field: str = "circle_hint") -> str:
    """A circle_hint: 8 to 128 of letters, digits, - and _."""
    if not isinstance(value, str) or _HINT_RE.fullmatch(value) is None:
        raise invalid(f"{field} must be 8 to 128 letters, digits, - or _")
    return value


def node_id_field(value: object, field: str = "node_id") -> str:
    """A node id: 8 to 128 of letters, digits, ., - and _."""
    if not isinstance(value, str) or _NODE_RE.fullmatch(value) is None:
        raise invalid(f"{field} must be 8 to 128 letters, digits, ., - or _")
    return value


def ws_node_id(value: object) -> str:
    """The node_id of a WebSocket subscriber (the existing relay took any non-empty one)."""
    if not isinstance(value, str) or _WS_NODE_RE.fullmatch(value) is None:
        raise invalid("node_id must be 1 to 128 letters, digits, ., - or _")
    return value


def header_node_id(value: str | None) -> str:
    """X-Felund-Node when it is a well-formed node id, else "" (it is only a hint)."""
    if value is None or _WS_NODE_RE.fullmatch(value) is None:
        return ""
    return value


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be one JSON object.

    orjson decodes a message batch several times faster than ``json``; what it
    refuses (a lone surrogate escape, NaN, nesting past 1,024, a UTF-16 body) goes
    to ``json``, so a body decodes to what ``json`` makes of it, but for integers
    past 64 bits, which orjson makes floats: no field takes either.
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            raise invalid("the body is not JSON") from None
    if not isinstance(obj, dict):
        raise invalid("the body must be a JSON object")
    return obj


def _clamped_int(value: object, field: str, low: int, high: int) -> int:
    if not _is_int(value):
        raise invalid(f"{field} must be an integer")
    assert isinstance(value, int)
    return min(max(value, low), high)


def _endpoint(value: object, index: int) -> dict[str, Any]:
    where = f"endpoints[{index}]"
    if not isinstance(value, dict):
        raise invalid(f"{where} must be an object")
    transport = value.get("transport")
    if transport not in _TRANSPORTS:
        raise invalid(f"{where}.transport must be tcp or ws")
    host = value.get("host")
    if not isinstance(host, str) or not 1 <= len(host) <= MAX_HOST_CHARS or not host.isprintable():
        raise invalid(f"{where}.host must be 1 to {MAX_HOST_CHARS} printable characters")
    port = value.get("port")
    if not isinstance(port, int) or not _is_int(port) or not 1 <= port <= 65535:
        raise invalid(f"{where}.port must be an integer from 1 to 65535")
    family = value.get("family", "ipv4")
    if family not in _FAMILIES:
        raise invalid(f"{where}.family must be ipv4 or ipv6")
    nat = value.get("nat", "unknown")
    if nat not in _NATS:
        raise invalid(f"{where}.nat must be one of {', '.join(_NATS)}")
    return {"transport": transport, "host": host, "port": port, "family": family, "nat": nat}


def parse_registration(obj: Mapping[str, Any]) -> Registration:
    """Validate a POST /v1/register body; unknown keys are ignored."""
    endpoints = obj.get("endpoints", [])
    if not isinstance(endpoints, list):
        raise invalid("endpoints must be an array")
    if len(endpoints) > MAX_ENDPOINTS:
        raise invalid(f"at most {MAX_ENDPOINTS} endpoints")
    capabilities = obj.get("capabilities", DEFAULT_CAPABILITIES)
    if not isinstance(capabilities, dict):
        raise invalid("capabilities must be an object")
    if len(compact_json(capabilities, ascii_only=True)) > MAX_CAPABILITIES_BYTES:
        raise invalid(f"capabilities must be at most {MAX_CAPABILITIES_BYTES} bytes of JSON")
    key = obj.get("signing_key")
    if key is not None and (not isinstance(key, str) or _KEY_RE.fullmatch(key) is None):
        raise invalid("signing_key must be 64 lowercase hex characters")
    return Registration(
        node_id=node_id_field(obj.get("node_id")),
        circle_hint=circle_hint_field(obj.get("circle_hint")),
        endpoints=tuple(_endpoint(e, i) for i, e in enumerate(endpoints)),
        capabilities=capabilities,
        ttl_s=_clamped_int(obj.get("ttl_s", DEFAULT_TTL_S), "ttl_s", MIN_TTL_S, MAX_TTL_S),
        signing_key=key,
        succeeds=_succeeds(obj.get("succeeds")),
    )


def _succeeds(value: object) -> tuple[str, str] | None:
    """A registration's ``succeeds``: {"key_id": 32 hex, "proof": 64 hex}, or absent."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"key_id", "proof"}:
        raise invalid('succeeds must be {"key_id", "proof"}')
    kid, proof = value["key_id"], value["proof"]
    if not isinstance(kid, str) or _KEY_ID_RE.fullmatch(kid) is None:
        raise invalid("succeeds.key_id must be 32 lowercase hex characters")
    if not isinstance(proof, str) or _KEY_RE.fullmatch(proof) is None:
        raise invalid("succeeds.proof must be 64 lowercase hex characters")
    return kid, proof


def parse_unregistration(obj: Mapping[str, Any]) -> tuple[str, str]:
    """Validate a DELETE /v1/register body: (circle_hint, node_id)."""
    return circle_hint_field(obj.get("circle_hint")), node_id_field(obj.get("node_id"))


def parse_message_batch(obj: Mapping[str, Any]) -> MessageBatch:
    """Validate a POST /v1/messages body, every message as strictly as a node would.

    The relay stores messages opaquely (the JSON object as sent, with its
    ``mac`` or ``enc``), but only messages a node would accept, and only
    under the hint of their own circle_id.
    """
    hint = circle_hint_field(obj.get("circle_hint"))
    raw = obj.get("messages")
    if not isinstance(raw, list):
        raise invalid("messages must be an array")
    if len(raw) > MAX_BATCH:
        raise ApiError(BATCH_TOO_LARGE, f"at most {MAX_BATCH} messages per request, got {len(raw)}")
    out: list[IncomingMessage] = []
    circles: set[str] = set()  # the circle_ids of this hint seen (a batch is one circle's)
    for index, item in enumerate(raw):
        try:
            msg = parse_message(item)
        except InvalidMessage as exc:
            raise ApiError(
                INVALID_MESSAGE, f"messages[{index}]: {exc.kind}: {exc.detail}"
            ) from None
        if msg.circle_id not in circles:
            if ids.circle_hint(msg.circle_id) != hint:
                raise ApiError(
                    CIRCLE_MISMATCH, f"messages[{index}]: circle_id is not of circle_hint"
                )
            circles.add(msg.circle_id)
        # A checked message holds strings and small integers only: orjson writes it as
        # compact_json does (ensure_ascii off), in a fraction of the time.
        out.append(IncomingMessage(msg.msg_id, msg.author_node_id, orjson.dumps(item).decode()))
    return MessageBatch(hint, tuple(out))


def parse_signal(obj: Mapping[str, Any]) -> SignalPost:
    """Validate a POST /v1/signal body (the existing browser client's call signalling)."""
    session_id = obj.get("session_id")
    if not isinstance(session_id, str) or _SESSION_RE.fullmatch(session_id) is None:
        raise invalid("session_id must be 8 to 256 printable ASCII characters")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in SIGNAL_TYPES:
        raise invalid("type must be one of " + ", ".join(sorted(SIGNAL_TYPES)))
    payload = obj.get("payload")
    if not isinstance(payload, str):
        raise invalid("payload must be a string")
    try:
        size = len(payload.encode("utf-8"))
    except UnicodeEncodeError:
        raise invalid("payload must be valid Unicode text") from None
    if size > MAX_SIGNAL_PAYLOAD_BYTES:
        raise invalid(f"payload must be at most {MAX_SIGNAL_PAYLOAD_BYTES} bytes")
    top = MAX_CANDIDATE_TTL_S if kind.endswith("candidate") else MAX_SIGNAL_TTL_S
    ttl = obj.get("ttl_s", top)
    if isinstance(ttl, float) and ttl.is_integer():
        ttl = int(ttl)
    return SignalPost(
        session_id=session_id,
        from_node_id=node_id_field(obj.get("from_node_id"), "from_node_id"),
        to_node_id=node_id_field(obj.get("to_node_id"), "to_node_id"),
        circle_hint=circle_hint_field(obj.get("circle_hint")),
        type=kind,
        payload=payload,
        ttl_s=_clamped_int(ttl, "ttl_s", MIN_SIGNAL_TTL_S, top),
    )


def session_id_param(value: str | None) -> str:
    """The optional session_id filter of GET /v1/signal ("" when absent)."""
    if not value:
        return ""
    if _SESSION_RE.fullmatch(value) is None:
        raise invalid("session_id must be 8 to 256 printable ASCII characters")
    return value


def int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter, clamped to [low, high]; 400 if it is not an integer."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if _INT_RE.fullmatch(raw) is None:
        raise invalid(f"{name} must be an integer")
    return min(max(int(raw), low), high)


def compact_json(obj: Any, *, ascii_only: bool = False) -> str:
    """Compact JSON text.

    Non-ASCII is kept as is unless ``ascii_only``: a parsed message cannot
    hold a lone surrogate (the wire checks refuse it), any other object can.
    """
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=ascii_only)
