"""The catch-up core (Clone pattern), sans-IO: events, gaps, snapshots, restarts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from felund.bus.catchup import Follower, Row

INC = "inc-a"


def rows(*seqs: int) -> list[Row]:
    return [{"store_seq": s, "msg_id": f"m{s}", "text": f"t{s}"} for s in seqs]


def seqs(applied: list[Row]) -> list[int]:
    return [r["store_seq"] for r in applied]


def live(last: int = 0) -> Follower:
    """A follower that has caught up with an empty store (or one at ``last``)."""
    f = Follower(last=last)
    assert f.syncing
    assert f.on_snapshot([], covers=last) == []
    assert f.finish_snapshot() == []
    assert not f.syncing
    return f


def test_a_new_follower_buffers_until_its_first_snapshot() -> None:
    f = Follower()
    assert f.on_event(INC, rows(1, 2)) == []
    assert f.on_event(INC, rows(3)) == []
    assert seqs(f.on_snapshot(rows(1), covers=1)) == [1]
    assert seqs(f.finish_snapshot()) == [2, 3]
    assert (f.last, f.syncing, f.buffer) == (3, False, [])


def test_events_are_applied_in_order_exactly_once() -> None:
    f = live()
    applied: list[Row] = []
    applied += f.on_event(INC, rows(1, 2))
    applied += f.on_event(INC, rows(3))
    applied += f.on_event(INC, rows(3))  # delivered twice
    applied += f.on_event(INC, rows(2, 3, 4))  # overlapping
    applied += f.on_event(INC, rows(5))
    assert seqs(applied) == [1, 2, 3, 4, 5]
    assert f.last == 5
    assert not f.syncing


def test_a_gap_switches_to_syncing_and_buffers() -> None:
    f = live()
    assert seqs(f.on_event(INC, rows(1, 2))) == [1, 2]
    assert f.on_event(INC, rows(5, 6)) == []  # 3 and 4 were lost
    assert f.syncing
    assert f.on_event(INC, rows(7)) == []
    assert f.last == 2
    assert seqs(f.buffer) == [5, 6, 7]


def test_snapshot_then_only_buffered_rows_beyond_it() -> None:
    f = live()
    applied = f.on_event(INC, rows(1, 2))
    f.on_event(INC, rows(5, 6))
    f.on_event(INC, rows(7))
    # The snapshot (since=2) covers up to 6; 7 came only as an event.
    applied += f.on_snapshot(rows(3, 4), covers=4)  # a first page, "more" follows
    applied += f.on_snapshot(rows(5, 6), covers=6)
    applied += f.finish_snapshot()
    assert seqs(applied) == [1, 2, 3, 4, 5, 6, 7]
    assert (f.last, f.syncing, f.buffer) == (7, False, [])
    applied += f.on_event(INC, rows(6, 7, 8))
    assert seqs(applied) == list(range(1, 9))


def test_a_hole_left_after_the_snapshot_keeps_syncing() -> None:
    f = live()
    f.on_event(INC, rows(2))  # 1 lost
    f.on_event(INC, rows(5))  # 3, 4 lost, and the snapshot below misses 3, 4 too
    applied = f.on_snapshot(rows(1, 2), covers=2)
    applied += f.finish_snapshot()
    assert seqs(applied) == [1, 2]
    assert f.syncing  # 5 cannot be applied before 3 and 4
    applied += f.on_snapshot(rows(3, 4, 5), covers=5)
    applied += f.finish_snapshot()
    assert seqs(applied) == [1, 2, 3, 4, 5]
    assert not f.syncing


def test_a_new_store_incarnation_forces_a_resync() -> None:
    f = live()
    assert seqs(f.on_event(INC, rows(1, 2))) == [1, 2]
    # The store restarted: even a row that continues the sequence is not trusted.
    assert f.on_event("inc-b", rows(3)) == []
    assert f.syncing
    assert f.store_inc == "inc-b"
    applied = f.on_snapshot(rows(3, 4), covers=4)
    applied += f.finish_snapshot()
    assert seqs(applied) == [3, 4]
    assert seqs(f.on_event("inc-b", rows(5))) == [5]


def test_a_heartbeat_from_a_new_incarnation_forces_a_resync() -> None:
    f = live()
    f.on_event(INC, rows(1))
    f.on_heartbeat("inc-b", 1)
    assert f.syncing


def test_a_heartbeat_beyond_our_seq_forces_a_resync() -> None:
    f = live()
    f.on_event(INC, rows(1, 2))
    f.on_heartbeat(INC, 2)
    assert not f.syncing
    f.on_heartbeat(INC, 1)  # stale
    assert not f.syncing
    f.on_heartbeat(INC, 3)  # 3 was lost, and nothing came after it
    assert f.syncing
    applied = f.on_snapshot(rows(3), covers=3)
    applied += f.finish_snapshot()
    assert seqs(applied) == [3]
    assert not f.syncing
    f.on_heartbeat(INC, 5)
    assert f.syncing


def test_a_follower_started_from_a_seq_skips_what_it_has() -> None:
    f = Follower(last=3)
    f.on_event(INC, rows(3, 4))
    applied = f.on_snapshot(rows(4, 5), covers=5)
    applied += f.finish_snapshot()
    assert seqs(applied) == [4, 5]


# --- any interleaving --------------------------------------------------------------------


@dataclass
class Model:
    """The store (truth, events in flight) and one follower, checked at every step."""

    follower: Follower = field(default_factory=Follower)
    inc: str = "inc-0"
    truth: int = 0
    queue: list[tuple[str, list[Row]]] = field(default_factory=list)
    applied: list[int] = field(default_factory=list)
    page: int = 3

    def apply(self, got: list[Row]) -> None:
        for r in got:
            assert r["store_seq"] == len(self.applied) + 1, (self.applied, seqs(got))
            self.applied.append(r["store_seq"])
        assert self.follower.last >= len(self.applied)

    def commit(self, n: int, dropped: bool) -> None:
        """The store commits n messages and publishes them as one event (maybe lost)."""
        new = rows(*range(self.truth + 1, self.truth + n + 1))
        self.truth += n
        if not dropped:
            self.queue.append((self.inc, new))

    def deliver(self) -> None:
        if self.queue:
            inc, got = self.queue.pop(0)
            self.apply(self.follower.on_event(inc, got))

    def heartbeat(self) -> None:
        self.follower.on_heartbeat(self.inc, self.truth)

    def restart_store(self) -> None:
        """A new incarnation; events still in flight from the old one may arrive."""
        self.inc = f"inc-{int(self.inc[4:]) + 1}"

    def snapshot(self) -> None:
        """What CatchUp does: page from ``last`` until the store says no more."""
        for _ in range(self.truth + 2):
            since = self.follower.last
            page = rows(*range(since + 1, min(since + self.page, self.truth) + 1))
            more = bool(page) and page[-1]["store_seq"] < self.truth
            covers = page[-1]["store_seq"] if more else self.truth
            self.apply(self.follower.on_snapshot(page, covers))
            if not more:
                break
        else:
            raise AssertionError("snapshot paging did not end")
        self.apply(self.follower.finish_snapshot())

    def poll_snapshot(self) -> None:
        if self.follower.syncing:
            self.snapshot()


_steps = st.lists(
    st.one_of(
        st.tuples(st.just("commit"), st.integers(1, 4), st.booleans()),
        st.tuples(st.just("deliver"), st.just(0), st.just(False)),
        st.tuples(st.just("poll"), st.just(0), st.just(False)),
        st.tuples(st.just("heartbeat"), st.just(0), st.just(False)),
        st.tuples(st.just("restart"), st.just(0), st.just(False)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_steps, st.integers(1, 5))
def test_any_interleaving_applies_each_message_once_in_order(
    steps: list[tuple[str, int, bool]], page: int
) -> None:
    m = Model(page=page)
    actions: dict[str, Any] = {
        "deliver": m.deliver,
        "poll": m.poll_snapshot,
        "heartbeat": m.heartbeat,
        "restart": m.restart_store,
    }
    for kind, n, dropped in steps:
        if kind == "commit":
            m.commit(n, dropped)
        else:
            actions[kind]()
    for _ in range(len(m.queue)):
        m.deliver()
    m.snapshot()  # the final snapshot of the full truth
    assert m.applied == list(range(1, m.truth + 1))
    assert m.follower.last == m.truth
    assert not m.follower.syncing
    assert m.follower.buffer == []
