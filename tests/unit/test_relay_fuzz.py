"""Hypothesis over every parser of the relay that takes bytes from a client (sans-IO).

Request bodies (register, unregister, messages and the wire checks of each
message, signal), query parameters, signature headers and the feed's client
frames. The property is the same everywhere: a parser answers a record within
its limits, or refuses with an ``ApiError`` of a 4xx status; nothing else
escapes (a TypeError here was a 500 with a traceback). Inputs are arbitrary
JSON and valid requests with one field replaced by arbitrary JSON, so that
every check is reached.

``make check`` runs a few thousand examples in all; ``make fuzz`` sets
``FELUND_FUZZ_EXAMPLES`` for a long run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from felund.errors import ApiError
from felund.relay.auth import check_fresh, signed_request
from felund.relay.protocol import (
    MAX_BATCH,
    MAX_CAPABILITIES_BYTES,
    MAX_ENDPOINTS,
    MAX_SIGNAL_PAYLOAD_BYTES,
    SIGNAL_TYPES,
    circle_hint_field,
    compact_json,
    header_node_id,
    http_status,
    int_param,
    node_id_field,
    parse_json_object,
    parse_message_batch,
    parse_registration,
    parse_signal,
    parse_unregistration,
    session_id_param,
    ws_node_id,
)
from felund.relay.server.feed import is_ping
from felund.testing import wire_message
from felund.v1 import crypto, ids
from felund.v1.wire import parse_message

# Examples per test: 11 tests here, 2200 in all by default (about 9 s of CPU).
EXAMPLES = int(os.environ.get("FELUND_FUZZ_EXAMPLES", "200"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SECRET = ids.new_secret()
CIRCLE_ID = ids.circle_id(SECRET)
HINT = ids.circle_hint(CIRCLE_ID)
NODE = ids.new_node_id()

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


def refused_or(parse: Callable[[], Any]) -> Any:
    """The parser's record, or None when it refused with a 4xx ApiError."""
    try:
        return parse()
    except ApiError as exc:
        assert 400 <= http_status(exc.code) < 500, exc
        assert exc.message and "\n" not in exc.message
        return None


def with_one_field(valid: dict[str, Any], fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """``valid`` with one field replaced by arbitrary JSON, dropped, or an unknown key added."""

    def change(field: str, value: Any, how: int) -> dict[str, Any]:
        out = dict(valid)
        if how == 0:
            out[field] = value
        elif how == 1:
            out.pop(field, None)
        else:
            out[f"x-{field}"] = value
        return out

    return st.builds(change, st.sampled_from(fields), json_values, st.integers(0, 2))


def _registration() -> dict[str, Any]:
    return {
        "node_id": NODE,
        "circle_hint": HINT,
        "endpoints": [{"transport": "tcp", "host": "192.0.2.1", "port": 9, "family": "ipv4"}],
        "capabilities": {"relay": False, "transport": ["tcp"]},
        "ttl_s": 120,
        "signing_key": crypto.api_signing_key(SECRET),
    }


def _endpoint_variants() -> st.SearchStrategy[dict[str, Any]]:
    endpoint = {"transport": "ws", "host": "h", "port": 1, "family": "ipv6", "nat": "open"}
    return with_one_field(endpoint, list(endpoint)).map(
        lambda e: {**_registration(), "endpoints": [e]}
    )


# --- bodies -------------------------------------------------------------------------------
@fuzz
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_body_is_an_object_or_a_400(raw: bytes) -> None:
    obj = refused_or(lambda: parse_json_object(raw))
    assert obj is None or isinstance(obj, dict)


@fuzz
@given(
    st.integers(1, 5000).map(lambda depth: ("[" * depth + "]" * depth).encode())
    | st.integers(1, 5000).map(lambda n: b'{"a":' + b"9" * n + b"}")
)
def test_deep_or_huge_json_is_a_400_not_a_crash(raw: bytes) -> None:
    refused_or(lambda: parse_json_object(raw))


@fuzz
@given(with_one_field(_registration(), list(_registration())) | _endpoint_variants() | json_values)
def test_registration(body: Any) -> None:
    reg = refused_or(lambda: parse_registration(body) if isinstance(body, dict) else None)
    if reg is None:
        return
    assert len(reg.endpoints) <= MAX_ENDPOINTS
    assert len(compact_json(reg.capabilities, ascii_only=True)) <= MAX_CAPABILITIES_BYTES
    assert 30 <= reg.ttl_s <= 600
    assert reg.signing_key is None or len(reg.signing_key) == 64
    json.dumps(list(reg.endpoints))  # stored as JSON


@fuzz
@given(with_one_field({"circle_hint": HINT, "node_id": NODE}, ["circle_hint", "node_id"]))
def test_unregistration(body: dict[str, Any]) -> None:
    refused_or(lambda: parse_unregistration(body))


def _message_variants() -> st.SearchStrategy[Any]:
    sealed = wire_message(SECRET, NODE, "hello")
    plain = wire_message(SECRET, NODE, "hello", encrypt=False)
    return (
        with_one_field(sealed, list(sealed))
        | with_one_field(plain, list(plain))
        | with_one_field(sealed["enc"], list(sealed["enc"])).map(lambda e: {**sealed, "enc": e})
        | json_values
    )


@fuzz
@given(_message_variants())
def test_the_relay_s_message_checks(msg: Any) -> None:
    batch = refused_or(lambda: parse_message_batch({"circle_hint": HINT, "messages": [msg]}))
    if batch is None:
        return
    (stored,) = batch.messages
    assert parse_message(json.loads(stored.payload)).msg_id == stored.msg_id
    assert stored.payload.encode()  # text the store and the feed can carry


@fuzz
@given(
    with_one_field({"circle_hint": HINT, "messages": []}, ["circle_hint", "messages"])
    | st.lists(st.just(wire_message(SECRET, NODE, "x", encrypt=False)), max_size=MAX_BATCH + 2).map(
        lambda msgs: {"circle_hint": HINT, "messages": msgs}
    )
)
def test_message_batch(body: dict[str, Any]) -> None:
    batch = refused_or(lambda: parse_message_batch(body))
    assert batch is None or len(batch.messages) <= MAX_BATCH


def _signal() -> dict[str, Any]:
    return {
        "session_id": "session-0001",
        "from_node_id": NODE,
        "to_node_id": ids.new_node_id(),
        "circle_hint": HINT,
        "type": "offer",
        "payload": "v=0",
        "ttl_s": 120,
    }


@fuzz
@given(with_one_field(_signal(), list(_signal())) | json_values)
def test_signal(body: Any) -> None:
    sig = refused_or(lambda: parse_signal(body) if isinstance(body, dict) else None)
    if sig is None:
        return
    assert sig.type in SIGNAL_TYPES
    assert len(sig.payload.encode()) <= MAX_SIGNAL_PAYLOAD_BYTES
    assert 10 <= sig.ttl_s <= 120


# --- queries, headers, feed frames ---------------------------------------------------------
query_text = st.text(max_size=300) | st.from_regex(r"-?[0-9]{1,25}", fullmatch=True)


@fuzz
@given(query_text, st.integers(-5, 5), st.integers(0, 10**6))
def test_integer_query_parameters(raw: str, low: int, span: int) -> None:
    value = refused_or(lambda: int_param({"limit": raw}, "limit", low, low, low + span))
    assert value is None or low <= value <= low + span


@fuzz
@given(json_values | query_text)
def test_identifier_fields(raw: Any) -> None:
    # Body fields take any JSON; query parameters and headers are text.
    for check in (circle_hint_field, node_id_field, ws_node_id):
        value = refused_or(lambda: check(raw))  # noqa: B023 - called at once
        assert value is None or value == raw
    if isinstance(raw, str):
        assert refused_or(lambda: session_id_param(raw)) in (None, "", raw)
        assert header_node_id(raw) in ("", raw)


headers = st.dictionaries(
    st.sampled_from(["X-Felund-Ts", "x-felund-nonce", "X-FELUND-SIGNATURE", "X-Felund-Node"]),
    st.text(max_size=80) | st.from_regex(r"[0-9a-f]{16,64}", fullmatch=True),
)


@fuzz
@given(headers, st.integers(0, 2**40))
def test_signature_headers(raw: dict[str, str], now: int) -> None:
    signed = refused_or(lambda: signed_request(CIMultiDict(raw)))
    if signed is not None:
        refused_or(lambda: check_fresh(signed, now))
        assert signed.nonce_expiry(time.time()) > 0


@fuzz
@given(st.text(max_size=200) | json_values.map(json.dumps))
def test_feed_client_frames(data: str) -> None:
    assert is_ping(data) in (True, False)
    assert is_ping('{"t":"PING"}')
