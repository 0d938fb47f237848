"""Native frames built from packed messages are the frames ``seal`` makes of their dicts."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from felund.gossip import native_frames as nativeproto
from felund.v1.wire import pack_wire

_wires = st.lists(
    st.dictionaries(
        st.text(max_size=12),
        st.one_of(
            st.text(max_size=300),
            st.integers(-(2**63), 2**64 - 1),
            st.none(),
            st.binary(max_size=50),
        ),
        max_size=10,
    ),
    max_size=70,
)


def _pair() -> tuple[nativeproto.Channel, nativeproto.Channel]:
    key = bytes(range(32))
    return nativeproto.Channel(key, is_client=True), nativeproto.Channel(key, is_client=False)


@given(_wires)
def test_seal_msgs_opens_as_the_frame_of_the_dicts(wires: list[dict[str, Any]]) -> None:
    ours, theirs = _pair()
    sealed = ours.seal_msgs([pack_wire(w) for w in wires])
    assert nativeproto.frame_length(sealed[:4]) == len(sealed) - 4
    assert theirs.open(sealed[4:]) == {"t": "MSGS", "msgs": wires}


@given(st.lists(st.integers(1, 200_000), max_size=60))
def test_msgs_chunks_keep_order_and_the_byte_budget(sizes: list[int]) -> None:
    packed = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    chunks = nativeproto.msgs_chunks(packed)
    assert [p for chunk in chunks for p in chunk] == packed
    assert all(chunks)
    for chunk in chunks:
        assert len(chunk) == 1 or sum(map(len, chunk)) <= nativeproto.MAX_MSGS_BYTES
    # Greedy: the next one would not have fitted.
    for chunk, after in itertools.pairwise(chunks):
        assert sum(map(len, chunk)) + len(after[0]) > nativeproto.MAX_MSGS_BYTES
