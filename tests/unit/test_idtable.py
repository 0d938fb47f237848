"""The id table: ``in`` and ``add`` as a set's, for ids of any shape, through its growth."""

from __future__ import annotations

import random

from felund.gossip.idtable import IdTable


class Hashed(str):
    """An id whose hash() is chosen: collisions and probing on demand."""

    value = 0

    def __hash__(self) -> int:
        return self.value


def hashed(text: str, value: int) -> Hashed:
    out = Hashed(text)
    out.value = value
    return out


def test_it_answers_as_a_set_through_its_growth() -> None:
    rng = random.Random(4)
    table, reference = IdTable(), set()
    for k in range(20_000):
        msg_id = rng.choice([f"{rng.getrandbits(128):032x}", f"id_{rng.randrange(5000)}"])
        assert table.add(msg_id) == (msg_id not in reference)
        reference.add(msg_id)
        if k % 997 == 0:
            assert all(m in table for m in reference)
    assert len(table) == len(reference)
    assert all(m in table for m in reference)
    assert not any(f"absent-{k}" in table for k in range(5000))


def test_take_adds_what_add_adds_and_says_which_were_new() -> None:
    ids = [f"{k:032x}" for k in range(3000)]
    bulk, one = IdTable(), IdTable()
    assert bulk.take(ids[:2000]) == ids[:2000]
    assert bulk.take([*ids[1000:], ids[2500]]) == ids[2000:]  # known ones and a repeat left out
    for m in ids:
        one.add(m)
    assert len(bulk) == len(one) == 3000
    assert all(m in bulk for m in ids)
    assert "f" * 32 not in bulk


def test_ids_in_the_same_slot_are_probed_past() -> None:
    table = IdTable()  # 8 slots: 1, 9 and 17 all start at slot 1
    for k, value in enumerate([1, 9, 17]):
        assert table.add(hashed(f"same-slot-{k}", value))
    assert all(hashed(f"x-{v}", v) in table for v in (1, 9, 17))
    assert hashed("x-25", 25) not in table  # probes past all three to an empty slot


def test_a_hash_of_zero_is_kept_not_taken_for_an_empty_slot() -> None:
    table = IdTable()
    assert hashed("zero", 0) not in table
    assert table.add(hashed("zero", 0))
    assert hashed("zero", 0) in table
    assert not table.add(hashed("zero", 0))


def test_only_strings_are_members() -> None:
    table = IdTable()
    table.add("a" * 32)
    assert b"a" * 32 not in table
    assert None not in table
    assert hash(7) == 7 and 7 not in table
