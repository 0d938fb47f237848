"""The relay's feed hub (sans-IO): who gets which frame, and what a slow client may hold."""

from __future__ import annotations

import json

from felund.relay.protocol import WS_FRAME_MESSAGES
from felund.relay.server.hub import Hub, Subscriber, chunked_frames

HINT = "hint-0001"


def _payload(msg_id: str, size: int = 0) -> str:
    return json.dumps({"msg_id": msg_id, "pad": "x" * size}, separators=(",", ":"))


def test_hub_leaves_out_the_poster_and_each_node_s_own_messages() -> None:
    hub = Hub(max_queue_bytes=150, budget_bytes=10**6)
    alice, bob, carol = (hub.subscribe(HINT, n) for n in ("alice", "bob", "carol"))
    for sub in (alice, bob, carol):
        assert sub.start([])
    sent = hub.publish(HINT, "carol", [("alice", '{"msg_id":"a1"}'), ("bob", '{"msg_id":"b1"}')], 7)
    assert sent == 2
    assert json.loads(_take(alice))["messages"] == [{"msg_id": "b1"}]
    assert json.loads(_take(bob))["messages"] == [{"msg_id": "a1"}]
    assert carol.pop_nowait() is None  # the poster
    # A subscriber that falls behind is marked for closing, not buffered forever.
    for n in range(3):
        hub.publish(HINT, "", [("dave", f'{{"msg_id":"d{n}"}}')], 8)
    assert alice.overflowed and not hub.publish("other-hint", "", [("x", "{}")], 9)
    hub.unsubscribe(alice)
    hub.unsubscribe(alice)
    assert len(hub) == 2


def test_frames_are_bounded_in_messages_and_bytes() -> None:
    small = [_payload(f"m{i}") for i in range(WS_FRAME_MESSAGES + 1)]
    frames = list(chunked_frames(small, 5))
    assert [len(json.loads(f)["messages"]) for f in frames] == [WS_FRAME_MESSAGES, 1]
    large = [_payload(f"l{i}", 40_000) for i in range(10)]
    frames = list(chunked_frames(large, 5, (3, 13), max_bytes=100_000))
    assert all(len(f) <= 100_000 + 200 for f in frames)
    assert [m["msg_id"] for f in frames for m in json.loads(f)["messages"]] == [
        f"l{i}" for i in range(10)
    ]
    # The span of the batch is on its last frame only: the receiver holds it all then.
    assert [("after" in json.loads(f), json.loads(f).get("cursor")) for f in frames] == [
        (False, None)
    ] * (len(frames) - 1) + [(True, 13)]
    # One message larger than a frame goes alone; nothing is dropped.
    (alone,) = chunked_frames([_payload("big", 300_000)], 5, max_bytes=100_000)
    assert json.loads(alone)["messages"][0]["msg_id"] == "big"
    assert list(chunked_frames([], 5)) == []


def _frame(msg_id: str) -> bytes:
    (frame,) = chunked_frames([_payload(msg_id, 1000)], 1)
    return frame


def _take(sub: Subscriber) -> bytes:
    frame = sub.pop_nowait()
    assert frame is not None
    sub.sent(frame)
    return frame


def test_queued_bytes_are_bounded_per_connection() -> None:
    size = len(_frame("p0"))  # every frame below
    hub = Hub(max_queue_bytes=3 * size, budget_bytes=100 * size)
    a, b = hub.subscribe(HINT, "a"), hub.subscribe(HINT, "b")
    assert a.start([]) and b.start([])
    for n in range(2):
        assert hub.publish(HINT, "", [("z", _payload(f"p{n}", 1000))], 1) == 2
    _take(b), _take(b)  # b takes its frames, a does not
    assert hub.publish(HINT, "", [("z", _payload("p2", 1000))], 1) == 2
    assert hub.publish(HINT, "", [("z", _payload("p3", 1000))], 1) == 1
    assert a.overflowed and not b.overflowed  # a went past its own 3 frames
    assert a.queued_bytes == 3 * size
    hub.unsubscribe(a)  # what a held goes back
    assert hub.budget.used == 2 * size == b.queued_bytes
    _take(b), _take(b)
    assert hub.budget.used == 0 and b.pop_nowait() is None


def test_the_budget_counts_each_frame_once_across_connections() -> None:
    size = len(_frame("p0"))
    hub = Hub(max_queue_bytes=10 * size, budget_bytes=3 * size)
    subs = [hub.subscribe(HINT, f"n{i}") for i in range(100)]
    assert all(sub.start([]) for sub in subs)
    # One frame for a hundred readers is one frame of memory.
    assert hub.publish(HINT, "", [("z", _payload("p0", 1000))], 1) == 100
    assert hub.budget.used == size
    # Backlogs are each reader's own: the one that would pass the budget is refused.
    late, later = hub.subscribe(HINT, "late"), hub.subscribe(HINT, "later")
    assert late.start([_frame("b0"), _frame("b1")])
    assert hub.budget.used == 3 * size
    assert not later.start([_frame("b2")]) and later.overflowed
    for sub in [*subs, late, later]:
        hub.unsubscribe(sub)
    assert hub.budget.used == 0


def test_a_backlog_larger_than_the_budget_is_refused_and_live_frames_wait_for_it() -> None:
    hub = Hub(max_queue_bytes=10**6, budget_bytes=10**6)
    sub = hub.subscribe(HINT, "n")
    hub.publish(HINT, "", [("z", _payload("live"))], 2)  # held until the backlog is queued
    backlog = list(chunked_frames([_payload("old")], 1))
    assert sub.start(backlog)
    order = [json.loads(_take(sub))["messages"][0]["msg_id"] for _ in range(2)]
    assert order == ["old", "live"]

    late = hub.subscribe(HINT, "m")
    assert not late.start(list(chunked_frames([_payload("big", 600_000)] * 2, 1)))
    assert late.overflowed
    hub.unsubscribe(late)
    assert hub.budget.used == sub.queued_bytes
