"""HTTP/1.x for a server of one page (the node's /metrics), sans-IO: a request head
in, the whole answer's bytes out.

Only what a scrape needs: GET or HEAD of the page, no request body, one answer
per connection (``Connection: close``), nothing chunked or kept alive. A head is
refused past ``MAX_HEAD`` bytes; anything malformed is a 400, never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

MAX_HEAD = 8 * 1024  # bytes of a request head, its blank line included
PATHS = frozenset({"/metrics", "/"})  # "/" too, as prometheus-client serves it
METHODS = ("GET", "HEAD")
# What the page is, asked with this Accept header: its status, content type and body.
Page = Callable[[str], tuple[int, str, bytes]]

_END = re.compile(rb"\r?\n\r?\n")  # a bare LF ends a line too (RFC 9112, 2.2)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(r"[\x21-\x7e]+")  # visible ASCII; anything else is percent-encoded
_VERSION = re.compile(r"HTTP/1\.[0-9]")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}
_PLAIN = "text/plain; charset=utf-8"


class Request(NamedTuple):
    """What a request head says that the answer depends on."""

    method: str
    path: str  # the target without its query
    accept: str  # the Accept header ("" when absent; repeated ones joined)


def head_length(data: bytes) -> int:
    """The length of the request head at the start of ``data`` (through its blank
    line), or 0 while ``data`` holds none complete."""
    end = _END.search(data)
    return 0 if end is None else end.end()


def parse(head: bytes) -> Request | None:
    """The request a complete head makes, or None if it is malformed."""
    lines = head.decode("latin-1").lstrip("\r\n").replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if not (_TOKEN.fullmatch(method) and _TARGET.fullmatch(target) and _VERSION.fullmatch(version)):
        return None
    accept: list[str] = []
    for line in lines[1:]:
        if not line:
            continue  # the blank line at the end
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):  # also a folded line (leading space)
            return None
        if name.lower() == "accept":
            accept.append(value.strip(" \t"))
    return Request(method, target.partition("?")[0], ",".join(accept))


def answer(head: bytes, page: Page) -> bytes:
    """The whole answer to a complete request head."""
    request = parse(head)
    if request is None:
        return response(400, _PLAIN, b"malformed request\n")
    if request.method not in METHODS:
        return response(405, _PLAIN, b"only GET and HEAD\n", allow=", ".join(METHODS))
    head_only = request.method == "HEAD"
    if request.path not in PATHS:
        return response(404, _PLAIN, b"not found: the metrics are at /metrics\n", head_only)
    status, content_type, body = page(request.accept)
    return response(status, content_type, body, head_only)


def too_large() -> bytes:
    """The answer to a head longer than ``MAX_HEAD``."""
    return response(431, _PLAIN, b"request head too large\n")


def incomplete() -> bytes:
    """The answer to a connection closed before its head ended."""
    return response(400, _PLAIN, b"incomplete request\n")


def response(
    status: int, content_type: str, body: bytes, head_only: bool = False, allow: str = ""
) -> bytes:
    """A whole answer, ``Connection: close``; ``head_only``: its head alone (for HEAD)."""
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if allow:
        lines.append(f"Allow: {allow}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body
