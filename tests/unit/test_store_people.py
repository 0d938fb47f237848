"""Who a circle's people are, as the store answers: a forger's unsigned message in a
signer's name renames and dates nobody (issue 15's rule for control events, for names too)."""

from __future__ import annotations

import time
from pathlib import Path

from felund.protocol import OP_APPEND, OP_CIRCLE_CREATE, OP_CIRCLE_JOIN, OP_WHO
from felund.store.database import Database
from felund.store.ops import NodeInfo, Ops
from felund.trust.identity import IdentityKey, is_derived_form
from felund.v1 import ids
from felund.v1.wire import compose_message, to_wire
from tests.unit.test_store_epochs import _call, _mesh, _post


def _node(tmp_path: Path, name: str) -> Ops:
    key = IdentityKey.generate()  # a new node's id: derived from its key
    assert is_derived_form(key.node_id)
    return Ops(Database(tmp_path / f"{name}.db"), NodeInfo(key.node_id, name, True, "", key=key))


def test_an_unsigned_message_in_a_signers_name_renames_and_dates_nobody(tmp_path: Path) -> None:
    a, b = _node(tmp_path, "alice"), _node(tmp_path, "bob")
    made = _call(a, OP_CIRCLE_CREATE, name="club")
    circle = made["circle_id"]
    _call(b, OP_CIRCLE_JOIN, code=made["code"])
    _mesh(a, b)
    _post(b, circle, "hello from bob")
    who = {p["node_id"]: p for p in _call(a, OP_WHO, circle_id=circle)["people"]}
    bob = b.node.node_id
    seen = who[bob]["last_seen"]
    later = int(time.time()) + 60
    forged = to_wire(
        compose_message(
            a.keys(circle).root or "",
            circle_id=circle,
            channel_id="general",
            author_node_id=bob,
            display_name="mallory",
            text="I am bob",
            created_ts=later,
            msg_id=ids.new_msg_id(bob, later),
            encrypt=True,
        )
    )
    assert _call(a, OP_APPEND, origin="gossip", msgs=[forged])["results"] == ["stored"]
    who = {p["node_id"]: p for p in _call(a, OP_WHO, circle_id=circle)["people"]}
    assert (who[bob]["display_name"], who[bob]["last_seen"]) == ("bob", seen)
