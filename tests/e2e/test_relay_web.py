"""The relay serves the browser client (felund/web) at /: types, caching, CSP, no escape.

Real `felund relay serve` processes on 127.0.0.1, raw HTTP (http.client,
so that paths such as ``/../x`` reach the server exactly as written).
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest

from felund.relay.server.static import CSP, WEB_ROOT
from felund.testing import Relay

WEB = WEB_ROOT


def get(relay: Relay, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_root_is_the_app_with_a_strict_csp(web_relay: Relay) -> None:
    status, headers, body = get(web_relay, "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert body == (WEB / "index.html").read_bytes()
    assert headers["content-security-policy"] == CSP
    for directive in (
        "default-src 'self'",
        "connect-src 'self' ws: wss: http: https:",
        "script-src 'self'",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ):
        assert directive in headers["content-security-policy"]
    assert headers["cache-control"] == "no-cache"
    assert headers["x-content-type-options"] == "nosniff"
    assert get(web_relay, "/index.html")[2] == body


def test_files_by_path_with_their_types(web_relay: Relay) -> None:
    status, headers, body = get(web_relay, "/lib/wire.js")
    assert status == 200
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert "content-security-policy" not in headers  # only documents need it
    assert body == (WEB / "lib" / "wire.js").read_bytes()
    # Every file of the app is served, each with a type a browser accepts for it.
    for path in sorted(WEB.rglob("*")):
        if not path.is_file() or any(p.startswith(".") for p in path.relative_to(WEB).parts):
            continue
        rel = path.relative_to(WEB).as_posix()
        status, headers, body = get(web_relay, f"/{rel}")
        assert status == 200, rel
        assert body == path.read_bytes(), rel
        if path.suffix in (".js", ".mjs"):
            assert headers["content-type"].startswith("text/javascript"), rel
        if path.suffix == ".css":
            assert headers["content-type"].startswith("text/css"), rel


def test_a_revalidation_is_cheap(web_relay: Relay) -> None:
    _, headers, _ = get(web_relay, "/lib/sync.js")
    conn = http.client.HTTPConnection("127.0.0.1", web_relay.port, timeout=10)
    try:
        conn.request("GET", "/lib/sync.js", headers={"If-None-Match": headers["etag"]})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 304
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path",
    [
        "/../pyproject.toml",
        "/../../etc/passwd",
        "/lib/../../relay_web.py",
        "/%2e%2e/relay_web.py",
        "/lib/%2e%2e/%2e%2e/relay_web.py",
        "/lib/..%2f..%2frelay_web.py",
        "/..%5crelay_web.py",
        "/lib/",
        "/lib",
        "/ui/",
        "/.hidden",
        "/lib//wire.js",
        "/lib/./wire.js",
        "/nope.js",
        "/lib/wire.js%00.html",
        "//etc/passwd",
    ],
)
def test_no_escape_no_listing(web_relay: Relay, path: str) -> None:
    status, _, body = get(web_relay, path)
    assert status == 404, (path, body[:200])
    assert json.loads(body)["code"] == "NOT_FOUND"


def test_the_api_is_unaffected(web_relay: Relay) -> None:
    status, headers, body = get(web_relay, "/v1/health")
    assert status == 200
    assert json.loads(body)["ok"] is True
    assert headers["content-type"].startswith("application/json")
    assert "content-security-policy" not in headers
    assert get(web_relay, "/v1/nothing")[0] == 404
    assert get(web_relay, "/metrics")[0] == 200
    status, headers, _ = get(web_relay, "/lib/wire.js", method="OPTIONS")
    assert status == 204  # preflights are the API's, everywhere
    assert get(web_relay, "/", method="POST")[0] == 405


def test_no_web_serves_only_the_api(tmp_path: Path) -> None:
    server = Relay(tmp_path / "relay", "--no-web")
    server.start()
    try:
        assert get(server, "/")[0] == 404
        assert get(server, "/lib/wire.js")[0] == 404
        assert get(server, "/v1/health")[0] == 200
    finally:
        server.stop()
