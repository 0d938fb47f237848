"""``store.snapshot`` of one circle: what relay-sync's push reads, by its own index."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felund import metrics
from felund.errors import RPCError
from felund.protocol import OP_APPEND, OP_CIRCLE_CREATE, OP_POST, OP_SNAPSHOT
from felund.store.database import Database
from felund.store.ops import NodeInfo, Ops
from felund.testing import handled, wire_message
from felund.v1 import ids

NODE = "n" * 24


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    db = Database(tmp_path / "felund.db")
    yield Ops(db, NodeInfo(NODE, "n", False, ""))
    db.close()


def _call(ops: Ops, op: str, body: dict[str, Any]) -> Any:
    return handled(ops, op, body).reply


def _post(ops: Ops, circle_id: str, *texts: str) -> None:
    ts = 1764000000
    msgs = [{"msg_id": ids.new_msg_id(NODE, ts), "created_ts": ts, "text": t} for t in texts]
    _call(ops, OP_POST, {"circle_id": circle_id, "msgs": msgs})


def _rows_read(scope: str) -> float:
    return metrics.STORE_ROWS_READ.labels(scope)._value.get()


def test_a_circle_s_page_holds_its_messages_only_and_covers_the_log(ops: Ops) -> None:
    # No names: a circle's name is its first control event, a message of its own.
    one = _call(ops, OP_CIRCLE_CREATE, {})["circle_id"]
    other = _call(ops, OP_CIRCLE_CREATE, {})["circle_id"]
    _post(ops, one, "1a", "1b")
    _post(ops, other, *(f"2-{i}" for i in range(50)))
    _post(ops, one, "1c")
    held = ops.db.circle(one)
    assert held is not None
    secret = held.secret
    _call(ops, OP_APPEND, {"origin": "relay", "msgs": [wire_message(secret, "w" * 24, "pulled")]})
    before = _rows_read("circle")
    page = _call(
        ops,
        OP_SNAPSHOT,
        {"since": 0, "circle_id": one, "exclude_origin": "relay", "with_wire": True},
    )
    assert [r["text"] for r in page["msgs"]] == ["1a", "1b", "1c"]
    assert all("wire" in r for r in page["msgs"])
    assert page["covers"] == ops.db.last_seq and not page["more"]
    assert _rows_read("circle") - before == 3  # not the 50 of the other circle
    # Paged: ``covers`` is where the next page starts, as for the whole log.
    first = _call(ops, OP_SNAPSHOT, {"since": 0, "circle_id": one, "limit": 2})
    assert [r["text"] for r in first["msgs"]] == ["1a", "1b"] and first["more"]
    rest = _call(ops, OP_SNAPSHOT, {"since": first["covers"], "circle_id": one, "limit": 2})
    assert [r["text"] for r in rest["msgs"]] == ["1c", "pulled"] and rest["more"] is False
    # A circle left (or never joined) still reads: its messages may remain.
    assert _call(ops, OP_SNAPSHOT, {"since": 0, "circle_id": "f" * 24})["msgs"] == []
    for bad in ({"circle_id": "x"}, {"circle_id": 5}, {"exclude_origin": "moon"}):
        with pytest.raises(RPCError):
            _call(ops, OP_SNAPSHOT, {"since": 0, **bad})


def test_the_circle_read_uses_its_index(ops: Ops) -> None:
    plan = ops.db._db.execute(
        "EXPLAIN QUERY PLAN SELECT store_seq FROM messages"
        " WHERE circle_id = ? AND store_seq > ? AND origin != ? ORDER BY store_seq LIMIT 10",
        ("c" * 24, 0, "relay"),
    ).fetchall()
    detail = " ".join(str(row[-1]) for row in plan)
    assert "messages_by_circle" in detail and "TEMP B-TREE" not in detail
