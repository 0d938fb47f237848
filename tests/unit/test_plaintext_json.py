"""A message's plaintext reads as ``json`` reads it, though orjson reads it first."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from felund.v1.crypto import _plaintext_json

texts = st.text(max_size=40)  # lone surrogates too: orjson refuses them, json takes them


def _json(raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return "refused", None


def _ours(raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", _plaintext_json(raw)
    except (ValueError, RecursionError):
        return "refused", None


@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
))  # fmt: skip
def test_a_plaintext_reads_as_json_reads_it(value: object) -> None:
    for ascii_only in (True, False):
        raw = json.dumps({"display_name": "x", "text": value}, ensure_ascii=ascii_only).encode(
            "utf-8", "surrogatepass"
        )
        assert _ours(raw) == _json(raw)


@given(st.binary(max_size=60) | st.sampled_from([b'{"a":NaN}', b"\xef\xbb\xbf{}", b"[" * 3000]))
def test_bytes_that_are_not_json_are_refused_as_json_refuses_them(raw: bytes) -> None:
    ours, theirs = _ours(raw), _json(raw)
    assert ours[0] == theirs[0]
    if ours[0] == "ok" and ours[1] == ours[1]:  # NaN is not equal to itself
        assert ours == theirs
