"""Hypothesis against a real relay process: every route, arbitrary bodies, queries and
signature headers. Whatever a client sends, the relay answers with a JSON error of a
4xx status (or a success), with CORS headers, never a 5xx, and counts no internal
error. The sans-IO parsers are fuzzed harder in tests/unit/test_relay_fuzz.py;
``make fuzz`` runs both with ``FELUND_FUZZ_EXAMPLES``.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_relay_server import HOST, Server
from tests.unit.test_relay_fuzz import (
    HINT,
    NODE,
    _message_variants,
    _registration,
    _signal,
    json_values,
    with_one_field,
)

EXAMPLES = int(os.environ.get("FELUND_FUZZ_EXAMPLES", "200")) // 2
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def fuzz_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A relay without a request rate limit (hypothesis sends many)."""
    server = Server(tmp_path_factory.mktemp("fuzz"), "--no-limits", cli=False)
    yield server
    assert "Traceback" not in server.log_text()
    server.stop()


def check(
    server: Server, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> None:
    """One request: answered with JSON and CORS, a success or a 4xx error."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    assert resp.status < 500, (method, path, resp.status, raw[:300])
    assert resp.getheader("Access-Control-Allow-Origin") == "*"
    answer = json.loads(raw)
    assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool), answer
    if not answer["ok"]:
        assert 400 <= resp.status < 500 and answer["code"] and answer["message"]


bodies = {
    "/v1/register": with_one_field(_registration(), list(_registration())),
    "/v1/messages": _message_variants().map(lambda m: {"circle_hint": HINT, "messages": [m]}),
    "/v1/signal": with_one_field(_signal(), list(_signal())),
}
# What HTTP lets a header value hold (anything else is aiohttp's plain 400).
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=70).map(
    str.strip
)
signature = st.fixed_dictionaries(
    {},
    optional={
        "X-Felund-Ts": header_text | st.integers(0, 2**40).map(str),
        "X-Felund-Nonce": header_text | st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
        "X-Felund-Signature": header_text | st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
        "X-Felund-Node": header_text | st.just(NODE),
    },
)


@fuzz
@given(
    st.sampled_from(sorted(bodies)).flatmap(
        lambda path: st.tuples(st.just(path), bodies[path] | json_values)
    ),
    signature,
)
def test_bodies(fuzz_relay: Server, case: tuple[str, Any], headers: dict[str, str]) -> None:
    path, body = case
    raw = json.dumps(body).encode()
    check(fuzz_relay, "POST", path, raw, {"Content-Type": "application/json", **headers})
    if path == "/v1/register":
        check(fuzz_relay, "DELETE", path, raw, headers)


query_values = st.text(max_size=40) | st.sampled_from(
    [HINT, NODE, "0", "-1", "99999999999999999999"]
)


@fuzz
@given(
    st.sampled_from(["/v1/messages", "/v1/peers", "/v1/signal", "/v1/relay/ws", "/v1/health"]),
    st.dictionaries(
        st.sampled_from(
            ["circle_hint", "since", "cursor", "limit", "to_node_id", "since_id", "session_id",
             "node_id", "ts", "nonce", "signature"]
        ),
        query_values,
    ),
    signature,
)  # fmt: skip
def test_queries(
    fuzz_relay: Server, path: str, query: dict[str, str], headers: dict[str, str]
) -> None:
    check(fuzz_relay, "GET", f"{path}?{urlencode(query)}", None, headers)


def test_no_internal_error_was_counted(fuzz_relay: Server) -> None:
    conn = http.client.HTTPConnection(HOST, fuzz_relay.port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    name = "felund_relay_server_internal_errors_total"
    assert [line for line in text.splitlines() if line.startswith(name)] == [f"{name} 0.0"]
