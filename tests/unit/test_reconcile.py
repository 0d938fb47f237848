"""Range-based set reconciliation: convergence, figures at 100k, guard rails."""

from __future__ import annotations

import bisect
import gc
import hashlib
import itertools
import random
import time
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felund.errors import InvalidMessage
from felund.gossip import reconcile
from felund.gossip.reconcile import (
    FINGERPRINT,
    IDLIST,
    IDLIST_FINAL,
    MAX_BOUND,
    MAX_TS,
    MIN_BOUND,
    SKIP,
    ItemSet,
    Reconciler,
    reconcile_pair,
)

FP0 = b"\0" * 16
HEX_A = "a" * 32


# --- helpers ----------------------------------------------------------------------------------


def exchange(a: ItemSet, b: ItemSet, **options: Any) -> dict[str, Any]:
    """A whole session through msgpack, keeping every side's have and need."""
    ra, rb = Reconciler(a, **options), Reconciler(b, **options)
    got: dict[str, Any] = {"a_have": [], "a_need": [], "b_have": [], "b_need": [], "messages": 1}
    msg: list[Any] | None = ra.initiate()
    sides = [(rb, "b"), (ra, "a")]
    k = 0
    while msg is not None:
        side, name = sides[k % 2]
        step = side.receive(msgpack.unpackb(msgpack.packb(msg)))
        got[f"{name}_have"] += step.have
        got[f"{name}_need"] += step.need
        msg = step.reply
        got["messages"] += msg is not None
        k += 1
    assert ra.over and rb.over
    return got


def check_converged(a: ItemSet, b: ItemSet, a_ids: set[str], b_ids: set[str], **options: Any):
    got = exchange(a, b, **options)
    for key in ("a_have", "a_need", "b_have", "b_need"):
        assert len(got[key]) == len(set(got[key])), f"duplicates in {key}"
    assert set(got["a_have"]) == a_ids - b_ids
    assert set(got["a_need"]) == b_ids - a_ids
    assert set(got["b_have"]) == b_ids - a_ids
    assert set(got["b_need"]) == a_ids - b_ids
    return got


def naive_fingerprint(items: list[tuple[int, str]], lo, hi) -> bytes:
    return direct_fingerprint([m for ts, m in items if lo <= (ts, m) < hi])


def direct_fingerprint(inside: list[str]) -> bytes:
    """The fingerprint of these ids, from its definition."""
    total = sum(int.from_bytes(hashlib.sha256(m.encode()).digest(), "little") for m in inside)
    data = (total % 2**256).to_bytes(32, "little") + len(inside).to_bytes(8, "little")
    return hashlib.sha256(data).digest()[:16]


# Ids of every allowed shape: hex (sent as bytes), non-hex, upper-case hex (sent as str),
# and ids sharing long prefixes with equal timestamps, so split bounds need id prefixes.
ids = st.one_of(
    st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_-]{8,20}", fullmatch=True),
    st.from_regex(r"[0-9A-F]{8,9}", fullmatch=True),
    st.from_regex(r"abcdefgh[a-c_-]{0,3}", fullmatch=True),
)
items = st.tuples(st.integers(0, 4), ids)
universes = st.lists(items, max_size=80, unique_by=lambda item: item[1])


@st.composite
def pairs(draw):
    universe = draw(universes)
    a = [x for x in universe if draw(st.booleans())]
    b = [x for x in universe if draw(st.booleans())]
    return a, b


# --- ItemSet ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(items, max_size=40), st.lists(st.tuples(items, items), max_size=8))
def test_fingerprints_match_a_naive_computation_while_items_arrive(adds, queries):
    s = ItemSet()
    seen: dict[str, int] = {}
    for k, (ts, m) in enumerate(adds):
        assert s.add(ts, m) == (m not in seen)
        seen.setdefault(m, ts)
        if k % 3 == 0:  # query between inserts: the lazy sums must stay right
            s.fingerprint(MIN_BOUND, (ts, m))
    flat = sorted((ts, m) for m, ts in seen.items())
    assert len(s) == len(flat)
    for lo, hi in [(MIN_BOUND, MAX_BOUND), *queries]:
        assert s.fingerprint(lo, hi) == naive_fingerprint(flat, lo, hi)
        assert s.ids(lo, hi) == [m for ts, m in flat if lo <= (ts, m) < hi]
        assert s.count(lo, hi) == len(s.ids(lo, hi))
    bulk = ItemSet(adds)
    assert bulk.fingerprint(MIN_BOUND, MAX_BOUND) == s.fingerprint(MIN_BOUND, MAX_BOUND)


def some_id(rnd: random.Random) -> str:
    """An id of any shape: hex, with long shared prefixes, upper-case hex, non-hex."""
    n = rnd.randrange(3000)
    return rnd.choice([f"{n:032x}", f"abcdefgh{n:x}", f"{n:08X}", f"id_{n:05d}-x"])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 600), st.randoms(use_true_random=False))
def test_chunk_sums_and_indices_stay_right_through_adds_in_any_order(size, rnd) -> None:
    """Hundreds of items (many chunks, cut as they fill; timestamps in a narrow range, so
    long equal-ts runs across chunks) arrive in batches by add or add_many, each batch
    followed by queries that bring the chunks' counts and sums up to date, so the next batch
    makes some stale: every range's fingerprint is the one computed from its definition, and
    index() is bisect_left in the sorted tuples."""
    adds = [(rnd.randrange(10), some_id(rnd)) for _ in range(size)]
    cuts = sorted(rnd.randrange(size + 1) for _ in range(rnd.randrange(8)))
    s = ItemSet()
    seen: dict[str, int] = {}
    for lo, hi in itertools.pairwise([0, *cuts, size]):
        if rnd.random() < 0.5:
            s.add_many(adds[lo:hi])
        else:
            for ts, m in adds[lo:hi]:
                s.add(ts, m)
        for ts, m in adds[lo:hi]:
            seen.setdefault(m, ts)
        flat = sorted((ts, m) for m, ts in seen.items())
        n = len(flat)
        assert len(s) == n
        sizes = [len(stamps) for stamps in s._stamps]  # only the last chunk may be small
        assert all(size >= reconcile._CHUNK for size in sizes[:-1]), sizes
        assert max(sizes) <= 2 * reconcile._CHUNK, sizes
        for _ in range(6):
            i = rnd.randint(0, n)
            j = rnd.choice([n, rnd.randint(i, n)])
            assert s.fingerprint_at(i, j) == direct_fingerprint([m for _, m in flat[i:j]])
            assert s.ids_at(i, j) == [m for _, m in flat[i:j]]
            if i < n:
                assert s.key(i) == flat[i]
        edges = sorted(rnd.randint(0, n) for _ in range(rnd.randint(2, 17)))
        assert s.fingerprints_at(edges) == [
            direct_fingerprint([m for _, m in flat[i:j]]) for i, j in itertools.pairwise(edges)
        ]
        bounds = [MIN_BOUND, MAX_BOUND, *((ts, "") for ts in range(11))]
        for k in rnd.sample(range(n), min(n, 12)):
            ts, m = flat[k]
            bounds += [(ts, m), (ts, m[: rnd.randint(1, len(m))])]
            if k:
                bounds.append(reconcile._separator(flat[k - 1], flat[k]))
        for bound in bounds:
            at = bisect.bisect_left(flat, bound)
            assert s.index(bound) == at
        lo_b, hi_b = sorted(rnd.sample(bounds, 2))
        assert s.fingerprint(lo_b, hi_b) == naive_fingerprint(flat, lo_b, hi_b)


@given(st.lists(items, max_size=60), st.lists(st.integers(0, 60), max_size=6))
def test_add_many_in_batches_matches_the_naive_set(adds, cuts) -> None:
    """Runs merged into the chunks among the items, or appended after them: the same set."""
    s = ItemSet()
    bounds = [0, *sorted(cuts), len(adds)]
    seen: dict[str, int] = {}
    for lo, hi in itertools.pairwise(bounds):
        s.add_many(adds[lo:hi])
        for ts, m in adds[lo:hi]:
            seen.setdefault(m, ts)
        flat = sorted((ts, m) for m, ts in seen.items())
        assert s.ids(MIN_BOUND, MAX_BOUND) == [m for _, m in flat]
        for k in range(0, len(flat), 7):
            assert s.fingerprint(MIN_BOUND, flat[k]) == naive_fingerprint(flat, MIN_BOUND, flat[k])


def test_add_many_of_a_big_scattered_batch_stays_right() -> None:
    rng = random.Random(7)
    all_items = [(rng.randrange(1000), f"{rng.getrandbits(64):016x}") for _ in range(6000)]
    s = ItemSet(all_items[:3000])
    s.add_many(all_items[3000:])  # thousands of places, in every chunk
    flat = sorted(set(all_items))
    assert s.ids(MIN_BOUND, MAX_BOUND) == [m for _, m in flat]
    assert s.fingerprint(MIN_BOUND, MAX_BOUND) == naive_fingerprint(flat, MIN_BOUND, MAX_BOUND)


def test_add_many_merges_into_an_existing_set() -> None:
    s = ItemSet([(5, "m" * 10), (9, "n" * 10)])
    assert s.add_many([(1, "a" * 10), (7, "b" * 10), (5, "m" * 10), (7, "b" * 10)]) == 2
    assert s.add_many([(10, "z" * 10)]) == 1  # appended
    assert s.ids(MIN_BOUND, MAX_BOUND) == ["a" * 10, "m" * 10, "b" * 10, "n" * 10, "z" * 10]
    assert "b" * 10 in s and "q" * 10 not in s
    assert not s.add(99, "a" * 10)  # the id is the identity, whatever the timestamp


@pytest.mark.parametrize(
    ("ts", "msg_id"),
    [
        (-1, HEX_A),
        (MAX_TS, HEX_A),
        (True, HEX_A),
        (1.0, HEX_A),
        (1, "short"),
        (1, "x" * 65),
        (1, "bad id!!"),
        (1, b"a" * 32),
    ],
)
def test_items_are_validated(ts, msg_id) -> None:
    with pytest.raises(ValueError):
        ItemSet().add(ts, msg_id)
    with pytest.raises(ValueError):
        ItemSet([(ts, msg_id)])


# --- convergence ------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    pairs(),
    st.sampled_from([2, 3, 4, 16]),
    st.sampled_from([1, 2, 3, 32]),
)
def test_both_sides_learn_exactly_the_differences(pair, buckets, list_threshold):
    a_items, b_items = pair
    a, b = ItemSet(a_items), ItemSet(b_items)
    a_ids, b_ids = {m for _, m in a_items}, {m for _, m in b_items}
    opts = {"buckets": buckets, "list_threshold": list_threshold, "max_rounds": 64}
    got = check_converged(a, b, a_ids, b_ids, **opts)
    rounds, size, a_need, b_need = reconcile_pair(a, b, **opts)
    assert sorted(a_need) == sorted(got["a_need"]) and sorted(b_need) == sorted(got["b_need"])
    assert rounds == (got["messages"] + 1) // 2
    assert size > 0
    if a_ids == b_ids:
        assert rounds == 1


@settings(max_examples=60, deadline=None)
@given(pairs(), st.sampled_from([2, 4]), st.sampled_from([1, 3]))
def test_tiny_message_caps_still_converge(pair, buckets, list_threshold):
    """Replies beyond the caps are deferred with a fingerprint of the rest, or split."""
    a_items, b_items = pair
    a_ids, b_ids = {m for _, m in a_items}, {m for _, m in b_items}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reconcile, "MAX_RANGES", 12)
        mp.setattr(reconcile, "MAX_IDS", 6)
        mp.setattr(reconcile, "MAX_OUT_ID_BYTES", 150)
        opts = {"buckets": buckets, "list_threshold": list_threshold, "max_rounds": 500}
        check_converged(ItemSet(a_items), ItemSet(b_items), a_ids, b_ids, **opts)


@pytest.mark.parametrize("empty_initiates", [True, False])
def test_finals_beyond_the_id_cap_are_split_or_deferred(monkeypatch, empty_initiates) -> None:
    monkeypatch.setattr(reconcile, "MAX_IDS", 50)
    full = [(i // 2, f"{i:032x}") for i in range(300)]
    names = {m for _, m in full}
    if empty_initiates:
        got = check_converged(ItemSet(), ItemSet(full), set(), names, max_rounds=50)
    else:
        got = check_converged(ItemSet(full), ItemSet(), names, set(), max_rounds=50)
    assert got["messages"] > 4  # uncapped, 3 or 4 messages would do


def test_a_peer_may_send_hex_ids_as_strings() -> None:
    mine = ItemSet([(1, HEX_A), (2, "b" * 32)])
    step = Reconciler(mine).receive([[MAX_TS, "", IDLIST, ["b" * 32, "c" * 32, "Not_Hex-1"]]])
    assert step.have == [HEX_A]
    assert step.need == ["c" * 32, "Not_Hex-1"]
    assert step.reply == [[MAX_TS, "", IDLIST_FINAL, [[bytes.fromhex(HEX_A)], b"\x06"]]]


# --- figures at 100k ---------------------------------------------------------------------------

N = 100_000
BASE_TS = 1_700_000_000


@pytest.fixture(scope="module")
def big() -> dict[str, Any]:
    rng = random.Random(7)
    universe = [(BASE_TS + i // 3, rng.randbytes(16).hex()) for i in range(N)]
    started = time.process_time()  # CPU time: tests running alongside do not count
    full = ItemSet(universe)
    full.fingerprint(MIN_BOUND, MAX_BOUND)
    build = time.process_time() - started
    lost = rng.randrange(N)
    return {
        "universe": universe,
        "build": build,
        "full": full,
        "copy": ItemSet(universe),
        "behind": ItemSet(universe[:-1000]),
        "one_lost": ItemSet(universe[:lost] + universe[lost + 1 :]),
        "lost": universe[lost][1],
    }


def test_building_100k_and_fingerprinting_takes_well_under_a_second(big) -> None:
    assert big["build"] < 1.0
    assert len(big["full"]) == N


def test_an_added_newest_item_costs_no_rebuild(big) -> None:
    s = ItemSet(big["universe"][:5000])
    s.fingerprint(MIN_BOUND, MAX_BOUND)
    s.add(BASE_TS + N, "f" * 32)
    assert s._valid == len(s._ids)  # of the chunks' counts and totals, only the end's is stale
    expected = ItemSet([*big["universe"][:5000], (BASE_TS + N, "f" * 32)])
    assert s.fingerprint(MIN_BOUND, MAX_BOUND) == expected.fingerprint(MIN_BOUND, MAX_BOUND)


def test_the_set_keeps_no_python_object_per_item() -> None:
    """About 64 bytes an item at 20k, the ids included (a chunk's 32-hex ids are 16 bytes
    each; ``in`` is answered from their hashes; a hash is kept only in sums): 185 when the
    set kept each id's string in a list and a set and each hash in a slot, 330 when each
    item also had a tuple and three ints."""
    rng = random.Random(3)
    gc.collect()
    tracemalloc.start()
    try:
        universe = [(BASE_TS + i // 3, rng.randbytes(16).hex()) for i in range(20_000)]
        s = ItemSet(universe)
        s.fingerprint(MIN_BOUND, MAX_BOUND)
        n = len(universe)
        del universe  # the strings the set was given: it must not keep them
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 75 * n


def test_100k_in_sync_take_one_round_trip_and_under_1kb(big) -> None:
    rounds, size, a_need, b_need = reconcile_pair(big["full"], big["copy"])
    assert (rounds, a_need, b_need) == (1, [], [])
    assert size < 1000


def test_100k_one_missing_is_found_with_a_few_kb(big) -> None:
    rounds, size, a_need, b_need = reconcile_pair(big["one_lost"], big["full"])
    assert (a_need, b_need) == ([big["lost"]], [])
    assert rounds <= 4
    assert size < 4000


def test_100k_with_the_1000_newest_missing_converge_under_100kb(big) -> None:
    rounds, size, a_need, b_need = reconcile_pair(big["full"], big["behind"])
    assert a_need == []
    assert sorted(b_need) == sorted(m for _, m in big["universe"][-1000:])
    assert size < 100_000
    assert rounds <= 5


# --- guard rails ------------------------------------------------------------------------------

OK_ID = "0123abcd"
MALFORMED: list[tuple[str, Any]] = [
    ("not a list", {"ranges": []}),
    ("a tuple", (1, "", 0)),
    ("too many ranges", [[k, "", SKIP] for k in range(1, 10_002)]),
    ("range not a list", [(MAX_TS, "", SKIP)]),
    ("range too short", [[MAX_TS, ""]]),
    ("range too long", [[MAX_TS, "", IDLIST, [], None]]),
    ("ts not an int", [["1", "", SKIP]]),
    ("ts is a bool", [[True, "", SKIP]]),
    ("ts a float", [[1.0, "", SKIP]]),
    ("ts negative", [[-1, "", SKIP]]),
    ("ts beyond int64", [[MAX_TS + 1, "", SKIP]]),
    ("bound id not a str", [[5, b"ab", SKIP]]),
    ("bound id bad chars", [[5, "a b", SKIP]]),
    ("bound id too long", [[5, "a" * 65, SKIP]]),
    ("bound beyond infinity", [[MAX_TS, "a", SKIP]]),
    ("first bound at MIN_BOUND", [[0, "", SKIP]]),
    ("bounds decreasing", [[5, "", SKIP], [4, "", SKIP]]),
    ("bounds repeated", [[5, "a", SKIP], [5, "a", FINGERPRINT, FP0]]),
    ("mode unknown", [[MAX_TS, "", 4, FP0]]),
    ("mode negative", [[MAX_TS, "", -1, FP0]]),
    ("mode a str", [[MAX_TS, "", "1", FP0]]),
    ("skip with payload", [[MAX_TS, "", SKIP, None]]),
    ("fingerprint missing", [[MAX_TS, "", FINGERPRINT]]),
    ("fingerprint short", [[MAX_TS, "", FINGERPRINT, b"\0" * 15]]),
    ("fingerprint long", [[MAX_TS, "", FINGERPRINT, b"\0" * 17]]),
    ("fingerprint a str", [[MAX_TS, "", FINGERPRINT, "0" * 16]]),
    ("idlist not a list", [[MAX_TS, "", IDLIST, OK_ID]]),
    ("idlist id short", [[MAX_TS, "", IDLIST, ["abc"]]]),
    ("idlist id long", [[MAX_TS, "", IDLIST, ["a" * 65]]]),
    ("idlist id bad chars", [[MAX_TS, "", IDLIST, ["abc/defgh"]]]),
    ("idlist id not str", [[MAX_TS, "", IDLIST, [12345678]]]),
    ("idlist id bytes short", [[MAX_TS, "", IDLIST, [b"abc"]]]),
    ("idlist id bytes long", [[MAX_TS, "", IDLIST, [b"a" * 33]]]),
    ("idlist duplicates", [[MAX_TS, "", IDLIST, [OK_ID, OK_ID]]]),
    ("idlist duplicates across forms", [[MAX_TS, "", IDLIST, [OK_ID, bytes.fromhex(OK_ID)]]]),
    (
        "too many ids in one message",
        [[k, "", IDLIST, [f"{k:08x}{j:08x}" for j in range(25_001)]] for k in range(1, 5)],
    ),
    ("final not a pair", [[MAX_TS, "", IDLIST_FINAL, [[]]]]),
    ("final bitmap not bytes", [[MAX_TS, "", IDLIST_FINAL, [[], []]]]),
    ("final bad id", [[MAX_TS, "", IDLIST_FINAL, [["!"], b""]]]),
    ("final unsolicited", [[MAX_TS, "", IDLIST_FINAL, [[], b""]]]),
]


@pytest.mark.parametrize(("why", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_messages_are_rejected(why, message) -> None:
    side = Reconciler(ItemSet([(1, HEX_A)]))
    with pytest.raises(InvalidMessage) as raised:
        side.receive(message)
    assert raised.value.kind == "recon"
    assert side.over
    with pytest.raises(InvalidMessage, match="session is over"):
        side.receive([])


def test_one_id_list_beyond_the_cap_is_rejected(monkeypatch) -> None:
    monkeypatch.setattr(reconcile, "MAX_IDS", 10)
    side = Reconciler(ItemSet())
    with pytest.raises(InvalidMessage, match="too many ids"):
        side.receive([[MAX_TS, "", IDLIST, [f"{k:08x}" for k in range(11)]]])


def lister() -> tuple[Reconciler, list[Any]]:
    """A side that has just sent an IDLIST of its three ids over everything."""
    side = Reconciler(ItemSet([(1, "a" * 32), (2, "b" * 32), (3, "c" * 32)]))
    step = side.receive([[MAX_TS, "", FINGERPRINT, FP0]])
    assert step.reply is not None
    [[ts, bound_id, mode, listed]] = step.reply
    assert (ts, bound_id, mode) == (MAX_TS, "", IDLIST)
    assert len(listed) == 3
    return side, listed


def test_a_final_answers_an_idlist() -> None:
    side, _ = lister()
    side._items.add(4, "e" * 32)  # arrives meanwhile, by another path
    step = side.receive(
        [[MAX_TS, "", IDLIST_FINAL, [["d" * 32, bytes.fromhex("e" * 32)], b"\x05"]]]
    )
    assert step.reply is None
    assert step.have == ["a" * 32, "c" * 32]  # bits 0 and 2 of our list
    assert step.need == ["d" * 32]  # e is ours by now
    assert side.over


@pytest.mark.parametrize(
    ("why", "message"),
    [
        ("bitmap too long", [[MAX_TS, "", IDLIST_FINAL, [[], b"\0\0"]]]),
        ("bitmap too short", [[MAX_TS, "", IDLIST_FINAL, [[], b""]]]),
        ("bit beyond the list", [[MAX_TS, "", IDLIST_FINAL, [[], b"\x08"]]]),
        ("offers an id we listed", [[MAX_TS, "", IDLIST_FINAL, [["a" * 32], b"\0"]]]),
        ("final for other bounds", [[9, "", SKIP], [MAX_TS, "", IDLIST_FINAL, [[], b"\0"]]]),
        ("no answer", []),
        ("no answer, skipped", [[MAX_TS, "", SKIP]]),
    ],
)
def test_bad_answers_to_an_idlist_are_rejected(why, message) -> None:
    side, _ = lister()
    with pytest.raises(InvalidMessage):
        side.receive(message)


def test_reopening_a_listed_range_is_an_answer() -> None:
    side, _ = lister()
    step = side.receive([[5, "", FINGERPRINT, FP0], [MAX_TS, "", SKIP]])
    assert step.reply is not None and step.reply[0][2] == IDLIST


def test_rounds_are_capped() -> None:
    side = Reconciler(ItemSet([(k, f"{k:032x}") for k in range(10)]), max_rounds=3)
    for _ in range(3):
        side.receive([[MAX_TS, "", FINGERPRINT, FP0]])
    assert side.rounds == 3
    with pytest.raises(InvalidMessage, match="too many rounds"):
        side.receive([[MAX_TS, "", FINGERPRINT, FP0]])


def test_a_peer_whose_fingerprints_never_match_is_stopped() -> None:
    ours = Reconciler(ItemSet([(k // 4, f"{k:032x}") for k in range(1000)]))
    liar = random.Random(3)
    message: list[Any] | None = ours.initiate()
    with pytest.raises(InvalidMessage, match="too many rounds"):
        for _ in range(100):
            assert message  # we keep asking: every fingerprint mismatches
            # Echo our bounds with garbage fingerprints, reopening our lists too.
            lie = [
                r if r[2] == SKIP else [r[0], r[1], FINGERPRINT, liar.randbytes(16)]
                for r in message
            ]
            message = ours.receive(lie).reply
    assert ours.rounds == 11


def test_a_peer_that_always_claims_a_full_mismatch_is_stopped() -> None:
    ours = Reconciler(ItemSet([(k // 4, f"{k:032x}") for k in range(1000)]), max_rounds=5)
    ours.initiate()
    for _ in range(5):
        assert ours.receive([[MAX_TS, "", FINGERPRINT, FP0]]).reply
    with pytest.raises(InvalidMessage, match="too many rounds"):
        ours.receive([[MAX_TS, "", FINGERPRINT, FP0]])


def test_a_side_whose_reply_does_not_ask_is_over() -> None:
    a = Reconciler(ItemSet([(1, HEX_A)]))
    b = Reconciler(ItemSet([(1, HEX_A)]))
    step = b.receive(a.initiate())
    assert step.reply == [] and b.over
    assert a.receive(step.reply).reply is None and a.over
    with pytest.raises(InvalidMessage, match="session is over"):
        b.receive([[MAX_TS, "", FINGERPRINT, FP0]])


def test_programming_errors() -> None:
    with pytest.raises(ValueError):
        Reconciler(ItemSet(), buckets=1)
    with pytest.raises(ValueError):
        Reconciler(ItemSet(), list_threshold=0)
    with pytest.raises(ValueError):
        Reconciler(ItemSet(), max_rounds=0)
    side = Reconciler(ItemSet())
    side.initiate()
    with pytest.raises(RuntimeError):
        side.initiate()


def test_bytes_hint_is_the_msgpack_size() -> None:
    message = [[MAX_TS, "", FINGERPRINT, FP0]]
    assert Reconciler.bytes_hint(message) == len(msgpack.packb(message)) == 31


def test_ids_of_every_form_come_back_as_they_were_added() -> None:
    """32 lowercase hex ids are kept as their bytes, a chunk holding any other as text:
    upper case, 31 or 64 hex chars and non-hex ids read back unchanged, in any mix."""
    rng = random.Random(5)
    odd = ["A" * 32, f"{7:032X}", "a" * 31, "b" * 64, "0" * 30 + "_x", "f" * 31 + "g"]
    items = [(rng.randrange(40), f"{rng.getrandbits(128):032x}") for _ in range(900)]
    items += [(rng.randrange(40), m) for m in odd]
    rng.shuffle(items)
    one_by_one, bulk = ItemSet(), ItemSet()
    for ts, m in items:
        one_by_one.add(ts, m)
    for k in range(0, len(items), 97):
        bulk.add_many(items[k : k + 97])
    flat = sorted(items)
    for s in (one_by_one, bulk):
        assert s.ids(MIN_BOUND, MAX_BOUND) == [m for _, m in flat]
        assert [s.key(i) for i in range(len(flat))] == flat
        assert all(m in s for m in odd) and "a" * 32 not in s
        for i in range(0, len(flat), 37):
            assert s.fingerprint_at(i, len(flat)) == direct_fingerprint([m for _, m in flat[i:]])
