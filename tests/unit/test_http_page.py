"""The /metrics server's HTTP, sans-IO: what each request head is answered."""

from __future__ import annotations

import pytest

from felund.actor import http_page

BODY = b"felund_x 1.0\n"
asked: list[str] = []


def page(accept: str) -> tuple[int, str, bytes]:
    asked.append(accept)
    return 200, "text/plain; version=0.0.4; charset=utf-8", BODY


def split(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    return status, dict(line.split(": ", 1) for line in lines), body


def test_get_metrics_answers_the_page_with_its_length_and_close() -> None:
    asked.clear()
    got = http_page.answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: a/b\r\n\r\n", page)
    status, headers, body = split(got)
    assert status == "HTTP/1.1 200 OK"
    assert headers == {
        "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
        "Content-Length": str(len(BODY)),
        "Connection": "close",
    }
    assert body == BODY and asked == ["a/b"]


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET /metrics?name[]=x&y HTTP/1.0\r\n\r\n",
        b"\r\nGET /metrics HTTP/1.1\r\n\r\n",  # a stray CRLF first (RFC 9112, 2.2)
        b"GET /metrics HTTP/1.1\nHost: x\n\n",  # bare LFs
    ],
)
def test_the_page_at_either_path_whatever_the_query(head: bytes) -> None:
    assert split(http_page.answer(head, page))[0] == "HTTP/1.1 200 OK"


def test_head_answers_the_headers_alone() -> None:
    status, headers, body = split(http_page.answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", page))
    assert status == "HTTP/1.1 200 OK" and headers["Content-Length"] == str(len(BODY))
    assert body == b""
    status, headers, body = split(http_page.answer(b"HEAD /x HTTP/1.1\r\n\r\n", page))
    assert status == "HTTP/1.1 404 Not Found" and int(headers["Content-Length"]) > 0
    assert body == b""


def test_accept_headers_are_joined_and_absent_is_empty() -> None:
    asked.clear()
    http_page.answer(b"GET / HTTP/1.1\r\naccept: a\r\nACCEPT:\tb \r\n\r\n", page)
    http_page.answer(b"GET / HTTP/1.1\r\n\r\n", page)
    assert asked == ["a,b", ""]


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"get /metrics HTTP/1.1\r\n\r\n", 405),  # methods are case-sensitive
        (b"GET /metrics/ HTTP/1.1\r\n\r\n", 404),
        (b"GET /other HTTP/1.1\r\n\r\n", 404),
        (b"GET http://x/metrics HTTP/1.1\r\n\r\n", 404),
        (b"garbage\r\n\r\n", 400),
        (b"\r\n\r\n", 400),
        (b"GET /metrics\r\n\r\n", 400),  # HTTP/0.9
        (b"GET  /metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics HTTP/2.0\r\n\r\n", 400),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
        (b"GET /m\xc3\xa9trics HTTP/1.1\r\n\r\n", 400),
        (b"G(T /metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nAccept : a\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\n\xff\xfe: \x00\r\n\r\n", 400),
    ],
)
def test_refusals(head: bytes, status: int) -> None:
    asked.clear()
    got, headers, body = split(http_page.answer(head, page))
    assert got.startswith(f"HTTP/1.1 {status} ") and asked == []
    assert headers["Content-Length"] == str(len(body)) and headers["Connection"] == "close"
    if status == 405:
        assert headers["Allow"] == "GET, HEAD"


def test_a_failed_page_keeps_its_status() -> None:
    got = http_page.answer(b"GET / HTTP/1.1\r\n\r\n", lambda _: (500, "text/plain", b"no\n"))
    assert split(got)[0] == "HTTP/1.1 500 Internal Server Error"


def test_too_large_and_incomplete() -> None:
    assert split(http_page.too_large())[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    assert split(http_page.incomplete())[0] == "HTTP/1.1 400 Bad Request"


@pytest.mark.parametrize(
    ("data", "length"),
    [
        (b"", 0),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", 0),
        (b"GET / HTTP/1.1\r\n\r\n", 18),
        (b"GET / HTTP/1.1\r\n\r\nmore", 18),
        (b"GET / HTTP/1.1\n\n", 16),
        (b"GET / HTTP/1.1\r\n\n", 17),
    ],
)
def test_head_length(data: bytes, length: int) -> None:
    assert http_page.head_length(data) == length
