"""The pull cursor across the relay's feed: the spans the relay sends, and relay-sync's PullCursor.

No process, no socket: the relay's hub and SQLite store on a file, the
feed's frame parser, and the sans-IO cursor and connectivity records.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from felund.epochs import root_only
from felund.relay.circle import MAX_INBOX_BYTES, CircleSync, FeedMessages
from felund.relay.connectivity import Connectivity
from felund.relay.feed import PING, parse_frame
from felund.relay.protocol import parse_message_batch
from felund.relay.pullcursor import MAX_WAITING, PullCursor
from felund.relay.server.hub import Hub
from felund.relay.server.sqlite import SqliteRelayStore
from felund.relay.server.store import Stored
from felund.testing import wire_message
from felund.v1 import ids

# --- the relay: spans ---------------------------------------------------------------------------


def _post(
    store: SqliteRelayStore, secret: str, *texts: str, author: str = "a" * 24
) -> list[Stored]:
    hint = ids.circle_hint(ids.circle_id(secret))
    msgs = [wire_message(secret, author, t) for t in texts]
    return store.append(parse_message_batch({"circle_hint": hint, "messages": msgs}))


def test_each_stored_message_names_the_cursor_before_it_in_its_circle(tmp_path: Path) -> None:
    store = SqliteRelayStore(tmp_path / "relay.db")
    try:
        one, other = ids.new_secret(), ids.new_secret()
        first = _post(store, one, "1", "2")
        between = _post(store, other, "x")  # another circle's: not in the first one's spans
        again = _post(store, one, "3")
        assert [s.after for s in first] == [0, first[0].id]
        assert between[0].after == 0
        assert again[0].id > between[0].id > first[1].id
        assert again[0].after == first[1].id  # the circle's previous, not the global previous
        page = store.page_after(ids.circle_hint(ids.circle_id(one)), 0, 10)
        assert page.next_cursor == again[0].id and len(page.messages) == 3
    finally:
        store.close()


def test_live_frames_carry_their_span_and_the_poster_gets_none() -> None:
    hub = Hub()
    alice, bob = hub.subscribe("hint-0001", "alice"), hub.subscribe("hint-0001", "bob")
    for sub in (alice, bob):
        sub.start([])
    stored = [("alice", '{"msg_id":"a1"}'), ("carol", '{"msg_id":"c1"}')]
    assert hub.publish("hint-0001", "dave", stored, 7, (4, 9)) == 3
    to_alice = json.loads(alice.pop_nowait() or b"")
    to_bob = json.loads(bob.pop_nowait() or b"")
    # alice's own message is left out, and the span still covers it: she holds it.
    assert to_alice == {
        "t": "MESSAGES",
        "messages": [{"msg_id": "c1"}],
        "server_time": 7,
        "after": 4,
        "cursor": 9,
    }
    assert to_bob["messages"] == [{"msg_id": "a1"}, {"msg_id": "c1"}]
    assert (to_bob["after"], to_bob["cursor"]) == (4, 9)
    # Without a span (the backlog), the frame is the existing relay's.
    hub.publish("hint-0001", "", [("carol", "{}")], 8)
    assert "cursor" not in json.loads(alice.pop_nowait() or b"")


# --- relay-sync: the frames it reads ------------------------------------------------------------


def test_parse_frame_keeps_a_well_formed_span_only() -> None:
    assert parse_frame('{"t":"PING"}') == PING
    frame = parse_frame('{"t":"MESSAGES","messages":[{}],"after":3,"cursor":5}')
    assert isinstance(frame, FeedMessages) and frame.span == (3, 5) and frame.messages == [{}]
    for bad_span in ('"after":5,"cursor":5', '"after":-1,"cursor":2', '"after":true,"cursor":2'):
        got = parse_frame(f'{{"t":"MESSAGES","messages":[],{bad_span}}}')
        assert isinstance(got, FeedMessages) and got.span is None
    for junk in ("", "[", "[]", '{"t":"MESSAGES"}', '{"t":"MESSAGES","messages":{}}', "1"):
        assert parse_frame(junk) is None


def test_the_inbox_is_bounded_and_asks_for_a_get_instead() -> None:
    secret = ids.new_secret()
    c = CircleSync.of(root_only(ids.circle_id(secret), secret))
    c.want_get = False
    big = FeedMessages([], (0, 1), MAX_INBOX_BYTES - 10)
    c.offer(big)
    assert c.pull_now.is_set() and not c.want_get
    c.offer(FeedMessages([], (1, 2), 11))  # over the bound: dropped, fetched instead
    assert c.want_get and len(c.inbox) == 1
    assert c.take() is big and c.take() is None and c.inbox_bytes == 0
    c.offer(FeedMessages([], (1, 2), 2 * MAX_INBOX_BYTES))  # alone, even a large one is kept
    assert len(c.inbox) == 1


# --- relay-sync: the pull cursor ----------------------------------------------------------------


def test_contiguous_spans_move_the_cursor_and_a_jump_is_a_gap() -> None:
    p = PullCursor()
    p.load(10)
    assert p.to_save() is None
    p.hold(10, 12)
    p.hold(12, 15)
    assert p.held == 15 and not p.gap and p.to_save() == 15
    p.saved_at(15)
    assert p.to_save() is None
    p.hold(17, 20)  # 16 or 17 missing: wait, and say so
    assert p.held == 15 and p.gap
    p.hold(20, 22)
    assert p.held == 15
    p.hold(15, 17)  # the missing span (our own push, or a GET page) joins them all
    assert p.held == 22 and not p.gap
    p.hold(3, 9)  # old news
    assert p.held == 22


def test_a_get_page_fills_every_gap_below_it() -> None:
    p = PullCursor()
    p.hold(5, 6)
    p.hold(8, 9)
    assert p.gap and p.held == 0
    p.hold(0, 9)  # GET from 0 answered next_cursor 9
    assert p.held == 9 and not p.gap


def test_waiting_spans_are_bounded_keeping_the_nearest() -> None:
    p = PullCursor()
    for i in range(MAX_WAITING * 3):
        p.hold(10 + i, 11 + i)  # all past a gap at 10
    assert p.gap and p.held == 0
    p.hold(0, 10)
    # The nearest MAX_WAITING joined; the rest were forgotten (stored all the same: the
    # cursor passes them with the next GET, and the store drops what it fetches twice).
    assert p.held == 10 + MAX_WAITING and not p.gap


@given(st.permutations(list(range(30))), st.integers(0, 30))
def test_spans_in_any_order_end_where_they_all_join(order: list[int], get_at: int) -> None:
    """Spans (i, i+1] in any order, and at one point a GET (the relay holds all 30)."""
    p = PullCursor()
    for n, i in enumerate(order):
        if n == get_at:
            p.hold(p.held, 30)
        p.hold(i, i + 1)
        if n < get_at:
            seen = set(order[: n + 1])
            prefix = next(k for k in range(31) if k not in seen)
            assert p.held == prefix and p.gap == any(j >= prefix for j in seen)
    assert p.held == 30 and not p.gap


# --- relay-sync: connectivity -------------------------------------------------------------------


def test_connectivity_reports_trouble_until_every_failing_call_recovers() -> None:
    c = Connectivity()
    assert c.report() == {
        "reachable": False,
        "last_ok_ts": None,
        "last_error": "",
        "error_since": None,
        "last_message_ts": None,
        "feed": False,
        "history_expired_ts": None,
    }
    c.ok("register", 100.0)
    assert c.reachable
    c.failed("pull", "unreachable: ClientConnectorError", 101.0)
    c.failed("register", "timeout: no answer within 30 s" + "x" * 500, 102.0)
    r = c.report()
    assert not r["reachable"] and r["error_since"] == 101.0 and len(r["last_error"]) == 120
    c.ok("pull", 103.0)  # register still failing
    assert not c.reachable and c.error_since == 101.0
    c.ok("register", 104.0)
    c.exchanged(104.5)
    r = c.report()
    assert r["reachable"] and r["last_error"] == "" and r["error_since"] is None
    assert r["last_ok_ts"] == 104.0 and r["last_message_ts"] == 104.5
