"""The relay's fast JSON (orjson) gives what ``json`` gives, where the relay uses it."""

from __future__ import annotations

import json
import math

import orjson
from hypothesis import given
from hypothesis import strategies as st

from felund.relay.protocol import compact_json, parse_json_object, parse_message_batch
from felund.testing import wire_message
from felund.v1 import ids

SECRET = f"{7:064x}"
AUTHOR = "node-json-0001"
texts = st.text(st.characters(codec="utf-8"), max_size=200)
names = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), max_size=30)


@given(text=texts, name=names)
def test_a_checked_message_is_written_as_compact_json_writes_it(text: str, name: str) -> None:
    for encrypt in (True, False):
        wire = wire_message(SECRET, AUTHOR, text, name=name, encrypt=encrypt)
        body = {"circle_hint": ids.circle_hint(ids.circle_id(SECRET)), "messages": [wire]}
        (stored,) = parse_message_batch(json.loads(compact_json(body))).messages
        assert stored.payload == compact_json(wire)


@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
))  # fmt: skip
def test_a_body_decodes_to_what_json_makes_of_it(value: object) -> None:
    body = json.dumps({"v": value}).encode()
    assert parse_json_object(body) == json.loads(body)
    assert orjson.loads(body) == json.loads(body)


def test_what_orjson_refuses_goes_to_json() -> None:
    for body in (b'{"a":"\\ud800"}', '{"a":1}'.encode("utf-16"), b'{"a":[' + b"1," * 2 + b"1]}"):
        assert parse_json_object(body) == json.loads(body)
    assert math.isnan(parse_json_object(b'{"a":NaN}')["a"])  # as json has it: no field takes it
