"""A signed HTTP client of the relay API (the wire spec's ``/v1`` calls), for relay-sync.

Every request is signed with the circle's signing key (``X-Felund-Node``,
``-Ts``, ``-Nonce``, ``-Signature``; the signed path is the part after
``/v1`` without the query) and bounded in time. Failures become
``RelayError`` with a bounded ``kind`` (a metric label and a log field);
nothing here logs, and no error text carries a key, signature or body.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from felund.errors import RelayError
from felund.relay.auth import HEADER_NODE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TS
from felund.v1.crypto import api_signature

REQUEST_TIMEOUT_S: Final = 30.0
CONNECT_TIMEOUT_S: Final = 10.0
# Failure kinds: unreachable, timeout, rate_limited, refused (4xx), unavailable (5xx), bad_answer.
KINDS: Final = ("unreachable", "timeout", "rate_limited", "refused", "unavailable", "bad_answer")


def relay_host(url: str) -> str:
    """The host (and port) of a relay URL, for logs: never a path or credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def signed_headers(
    key_hex: str, node_id: str, method: str, path: str, body: bytes, *, now: float | None = None
) -> dict[str, str]:
    """The signature headers of one request (``path`` after ``/v1``, no query)."""
    ts = int(time.time() if now is None else now)
    nonce = secrets.token_hex(16)
    return {
        HEADER_NODE: node_id,
        HEADER_TS: str(ts),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: api_signature(key_hex, method, path, body, ts, nonce),
    }


class RelayClient:
    """Signed calls to one relay, as one node."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, node_id: str) -> None:
        self.session = session
        self.base = base_url.rstrip("/")
        self.node_id = node_id

    async def call(
        self,
        method: str,
        path: str,
        key_hex: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        """One signed request to ``/v1{path}``; its JSON answer (``ok`` true) or RelayError."""
        raw = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = signed_headers(key_hex, self.node_id, method, path, raw)
        if body is not None:
            headers["Content-Type"] = "application/json"
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S)
        try:
            async with self.session.request(
                method,
                f"{self.base}/v1{path}",
                params=query,
                data=raw if body is not None else None,
                headers=headers,
                timeout=timeout,
            ) as resp:
                text = await resp.read()
                status = resp.status
                retry = resp.headers.get("Retry-After", "")
        except TimeoutError:
            raise RelayError("timeout", f"no answer within {REQUEST_TIMEOUT_S:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise RelayError("unreachable", type(exc).__name__) from None
        try:
            answer = json.loads(text) if text else None
        except (ValueError, RecursionError):
            answer = None
        if status != 200 or not isinstance(answer, dict) or answer.get("ok") is not True:
            code = str(answer.get("code", ""))[:40] if isinstance(answer, dict) else ""
            if status == 429:
                wait = float(retry) if retry.isdigit() else 1.0
                raise RelayError("rate_limited", f"HTTP {status}", code, retry_after=wait)
            if 400 <= status < 500:
                raise RelayError("refused", f"HTTP {status}", code)
            if status >= 500:
                raise RelayError("unavailable", f"HTTP {status}", code)
            raise RelayError("bad_answer", f"HTTP {status}", code)
        return answer

    def feed_url(self) -> str:
        """The URL of the WebSocket feed (aiohttp upgrades http(s) URLs)."""
        return f"{self.base}/v1/relay/ws"
