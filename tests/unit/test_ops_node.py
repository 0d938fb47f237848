"""The store's node operations (settings, cursors) on a real database file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from felund.errors import RPCError
from felund.protocol import OP_CONTROL, OP_CURSOR, OP_SETTINGS
from felund.store.database import Database
from felund.store.ops import NodeInfo, Ops
from felund.v1 import ids

BAD_URLS = [
    "ftp://relay.example.org",
    "relay.example.org",
    "http://",
    "http://relay example.org",
    "http://relay.example.org/\x07",
    "https://user:secret@relay.example.org",
    "https://relay.example.org/api?x=1",
    "http://relay.example.org:http",
    "https://relay.example.org/" + "a" * 600,
]


def test_settings_op(tmp_path: Path) -> None:
    db = Database(tmp_path / "felund.db")
    ops = Ops(db, NodeInfo("n" * 24, "nina", False, "", "https://configured.example/api"))
    with db.transaction():
        out = ops.handle(OP_SETTINGS, {})
        assert out.reply == {"display_name": "nina", "relay_url": "https://configured.example/api"}
        assert not out.settings_changed
        out = ops.handle(OP_SETTINGS, {"relay_url": "http://127.0.0.1:8080"})
        assert out.reply["relay_url"] == "http://127.0.0.1:8080" and out.settings_changed
        assert not ops.handle(OP_SETTINGS, {"relay_url": "http://127.0.0.1:8080"}).settings_changed
        for body in (
            *({"relay_url": bad} for bad in BAD_URLS),
            {"relay_url": 1},
            {"display_name": "x"},
            {"relay_url": "", "colour": "red"},
        ):
            with pytest.raises(RPCError) as refused:
                ops.handle(OP_SETTINGS, body)
            assert refused.value.code == "bad_request"
        assert ops.handle(OP_SETTINGS, {}).reply["relay_url"] == "http://127.0.0.1:8080"
        assert ops.handle(OP_SETTINGS, {"relay_url": ""}).reply["relay_url"] == ""  # off
        circle = ops.handle("store.circle.create", {"name": "c"}).reply["circle_id"]
        now = int(time.time())
        renamed = ops.handle(
            OP_CONTROL,
            {
                "circle_id": circle,
                "event": {
                    "t": "CHANNEL_EVT",
                    "op": "rename",
                    "actor_node_id": "n" * 24,
                    "display_name": "Nina B.",
                },
                "msg_id": ids.new_msg_id("n" * 24, now),
                "created_ts": now,
            },
        )
        assert renamed.settings_changed
    assert ops.handle(OP_SETTINGS, {}).reply == {"display_name": "Nina B.", "relay_url": ""}
    db.close()


def test_cursor_op_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "felund.db"
    db = Database(path)
    ops = Ops(db, NodeInfo("n" * 16, "n", False, ""))
    with db.transaction():
        assert ops.handle(OP_CURSOR, {"key": "relay.pull:x"}).reply == {"value": 0}
        assert ops.handle(OP_CURSOR, {"key": "relay.pull:x", "value": 42}).reply == {"value": 42}
    db.close()
    db = Database(path)
    ops = Ops(db, NodeInfo("n" * 16, "n", False, ""))
    assert ops.handle(OP_CURSOR, {"key": "relay.pull:x"}).reply == {"value": 42}
    for bad in (
        {"key": ""},
        {"key": "k" * 129},
        {"key": "k", "value": -1},
        {"key": "k", "value": "1"},
    ):
        with pytest.raises(RPCError, match=r"key|value"):
            ops.handle(OP_CURSOR, bad)
    db.close()
