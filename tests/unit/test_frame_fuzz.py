"""Hypothesis over the parsers of what peers send: v1 lines, native frames, control-event
texts. Whatever comes, the answer is a value or the one refusal (PeerError, a counted
reason), never another exception. `make fuzz` runs these long (FELUND_FUZZ_EXAMPLES)."""

from __future__ import annotations

import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from felund.errors import PeerError
from felund.gossip import native_frames, v1_frames
from felund.protocol import DEFAULT_CHANNEL
from felund.v1 import chatmodel

EXAMPLES = int(os.environ.get("FELUND_FUZZ_EXAMPLES", "200"))
KEY = bytes(range(32))
CIRCLE = "c" * 64
AUTHOR = "a" * 24

# JSON that looks like frames and events: their keys, with values of any JSON type.
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    ["t", "op", "channel_id", "circle_id", "actor_node_id", "node_id", "access_mode",
     "key_hash", "name", "display_name", "created_by", "target_node_id", "ids", "msgs"]
)  # fmt: skip
_objects = st.dictionaries(_keys, _json, max_size=8)


@settings(max_examples=EXAMPLES)
@given(st.binary(max_size=600) | _objects.map(lambda o: json.dumps(o).encode()))
def test_a_v1_line_is_a_frame_or_a_peer_error(line: bytes) -> None:
    for key in (None, KEY):
        try:
            frame = v1_frames.decode(line, key)
        except PeerError:
            continue
        assert isinstance(frame, dict)


@settings(max_examples=EXAMPLES)
@given(st.lists(st.binary(max_size=300), max_size=6))
def test_native_bytes_are_frames_or_a_peer_error(chunks: list[bytes]) -> None:
    """Any bytes on a native connection: opened frames, None for more, or PeerError."""
    buffer = native_frames.FrameBuffer(native_frames.Channel(KEY, is_client=True))
    try:
        for chunk in chunks:
            buffer.feed(chunk)
            while (frame := buffer.next_frame()) is not None:
                assert isinstance(frame, dict)
    except PeerError:
        pass


@settings(max_examples=EXAMPLES)
@given(_objects | _json)
def test_a_sealed_frame_of_any_content_opens_to_a_frame_or_a_peer_error(content: object) -> None:
    """A peer holding the session key may seal anything: it is refused, never raised."""
    server = native_frames.Channel(KEY, is_client=False)
    client = native_frames.Channel(KEY, is_client=True)
    sealed = server.seal(content)  # type: ignore[arg-type]
    try:
        frame = client.open(sealed[native_frames.HEADER.size :])
    except PeerError:
        return
    assert isinstance(frame, dict) and frame["t"] in native_frames.FRAME_TYPES


@settings(max_examples=max(1, EXAMPLES // 4))  # a fold is dearer than a parse
@given(
    st.lists(
        st.tuples(
            st.text(max_size=300) | _objects.map(json.dumps),
            st.integers(-(2**42), 2**42),
        ),
        max_size=8,
    )
)
def test_control_event_texts_fold_without_raising(texts: list[tuple[str, int]]) -> None:
    events = [
        chatmodel.ControlEvent(f"{AUTHOR}-{i}", AUTHOR, ts, text)
        for i, (text, ts) in enumerate(texts)
    ]
    state = chatmodel.derive(events, CIRCLE, now=1_800_000_000)
    assert DEFAULT_CHANNEL in state.channels
