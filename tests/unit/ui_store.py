"""The ui's view model against the real store: felund.store.ops on a real database, no processes.

``UiStore`` answers the model's ``Call`` effects with the store's own
handlers, each in a transaction of its own (as ``felund.store.client.LocalNode``
runs them), and records the calls it answered. What a test needs in the
store is put there for real: circles by ``store.circle.create`` (or
``store.circle.join``), this node's control events by ``store.control``, and
another member's (BOB's) messages and control events by ``store.append`` of
wire messages composed with the circle's secret, as gossip delivers them.

Shared by tests/test_ui_model.py and tests/test_ui_render.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from felund.errors import RPCError
from felund.protocol import (
    CONTROL_CHANNEL,
    MAX_POST_BATCH,
    OP_APPEND,
    OP_CIRCLE_CREATE,
    OP_CIRCLE_JOIN,
    OP_CONTROL,
    OP_CURSOR,
    OP_POST,
)
from felund.store.database import Database
from felund.store.ops import NodeInfo, Ops, Outcome
from felund.trust.identity import IdentityKey
from felund.ui.model import Call, Copy, Effect, Model, Quit
from felund.ui.render import render
from felund.ui.state import mark_key
from felund.v1 import chatmodel, ids
from felund.v1.invite import encode_invite
from felund.v1.wire import compose_message, to_wire

ME = "b" * 24  # this node
BOB = "c" * 24  # another member of its circles
BOB_KEY = IdentityKey.from_seed(b"b" * 32)  # signs BOB's messages (an older id: pinned)
T0 = 1_700_000_000  # 2023-11-14 22:13:20 UTC
Row = dict[str, Any]


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Times show in UTC, whatever the machine's zone."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


class UiStore:
    """This node's store, as the ui's app reaches it: the real handlers on a real database."""

    def __init__(self, path: Path) -> None:
        self.db = Database(path)
        # Signing (its id, older than keys, takes any key): the owner of the circles it makes.
        node = NodeInfo(ME, "alice", True, "127.0.0.1:9999", key=IdentityKey.from_seed(bytes(32)))
        self.ops = Ops(self.db, node)
        self.calls: list[Call] = []  # every call of the model answered, in order
        self.copied: list[str] = []  # what the model put on the clipboard (Copy effects)
        self.circle_id = ""  # the circle that friends() made

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    # --- answering the model ----------------------------------------------------------
    def handle(self, op: str, body: dict[str, Any]) -> Outcome:
        """Run one operation in a transaction of its own; RPCError if the store refuses it."""
        with self.db.transaction():
            return self.ops.handle(op, body)

    def run(self, call: Call) -> Outcome:
        """Carry out one of the model's calls (recorded); its outcome, or RPCError."""
        self.calls.append(call)
        return self.handle(call.op, call.body)

    def answer(self, model: Model, call: Call) -> list[Effect]:
        """Carry out a call and give the model the store's answer, as the app does."""
        try:
            outcome = self.run(call)
        except RPCError as exc:
            return model.on_error(call.token, exc.code, str(exc))
        return model.on_reply(call.token, outcome.reply)

    def drive(self, model: Model, effects: Iterable[Effect]) -> list[Quit]:
        """Answer calls (and the calls their answers make) until none is left; the Quits."""
        quits: list[Quit] = []
        pending = list(effects)
        while pending:
            nxt: list[Effect] = []
            for effect in pending:
                if isinstance(effect, Quit):
                    quits.append(effect)
                elif isinstance(effect, Copy):
                    self.copied.append(effect.text)
                else:
                    nxt += self.answer(model, effect)
            pending = nxt
        return quits

    def ops_called(self, op: str) -> list[Call]:
        """The calls of one operation answered so far."""
        return [c for c in self.calls if c.op == op]

    # --- putting things in the store -----------------------------------------------------
    def friends(
        self, general: Iterable[int] = range(1, 11), dev: Iterable[int] = range(11, 16)
    ) -> str:
        """The usual circle, "friends": made here, with #dev (this node made it; BOB
        joined), #ops (BOB made it; this node is not in it), and BOB's messages
        ``general`` in #general and ``dev`` in #dev (numbered as ``bob_says``)."""
        self.circle_id = self.create_circle("friends")
        self.i_do(
            {"t": "CHANNEL_EVT", "op": "create", "channel_id": "dev", "access_mode": "public"}
        )
        self.bob_does({"t": "CHANNEL_EVT", "op": "create", "channel_id": "ops"})
        self.bob_does({"t": "CHANNEL_EVT", "op": "join", "channel_id": "dev"})
        self.bob_says_all(general, "general")
        self.bob_says_all(dev, "dev")
        return self.circle_id

    def create_circle(self, name: str) -> str:
        """A circle this node creates (its id is random); its id."""
        circle_id: str = self.handle(OP_CIRCLE_CREATE, {"name": name}).reply["circle_id"]
        return circle_id

    def join_work(self) -> str:
        """BOB's circle "work", joined by his invite code; its id.

        The store lists circles by (joined_ts, circle_id): a secret whose
        circle id sorts after friends' lists work second even when both were
        joined in the same second."""
        secret = ids.new_secret()
        while ids.circle_id(secret) <= self.circle_id:
            secret = ids.new_secret()
        code = encode_invite(secret, "127.0.0.1:9998")
        circle_id: str = self.handle(OP_CIRCLE_JOIN, {"code": code, "name": "work"}).reply[
            "circle_id"
        ]
        return circle_id

    def i_do(self, event: dict[str, Any], at: int = T0, circle_id: str = "") -> Row:
        """A control event of this node written ``at`` then, as `felund channel ...`
        writes it (not through the ui); its stored row."""
        body = {
            "circle_id": circle_id or self.circle_id,
            "msg_id": ids.new_msg_id(ME, at),
            "created_ts": at,
            "event": {**event, "actor_node_id": ME},
        }
        (row,) = self.handle(OP_CONTROL, body).stored
        return row

    def i_say(self, n: int, channel: str = "general", circle_id: str = "") -> Row:
        """This node's message n (as numbered by ``bob_says``), posted here; its stored row."""
        body = {
            "circle_id": circle_id or self.circle_id,
            "channel_id": channel,
            "msgs": [{"msg_id": f"{n:032x}", "created_ts": T0 + n, "text": f"message {n}"}],
        }
        (row,) = self.handle(OP_POST, body).stored
        return row

    def bob_does(self, event: dict[str, Any], n: int | None = None, circle_id: str = "") -> Row:
        """A control event of BOB's, as gossip delivers it; its stored row (message n if given)."""
        text = chatmodel.event_text({**event, "actor_node_id": BOB})
        if n is not None:
            return self.bob_says(n, CONTROL_CHANNEL, circle_id, text=text)
        msg_id = ids.new_msg_id(BOB, T0)
        return self.bob_says(0, CONTROL_CHANNEL, circle_id, text=text, msg_id=msg_id, created_ts=T0)

    def bob_says(
        self, n: int, channel: str = "general", circle_id: str = "", *, signed: bool = True,
        **fields: Any,
    ) -> Row:  # fmt: skip
        """BOB's message n (id n in hex, written at T0 + n, text "message n") as gossip
        delivers it, with ``fields`` changed, signed by BOB_KEY unless not ``signed`` (as
        a v1 client writes); the row chat.msg.stored carries for it."""
        (row,) = self._append(circle_id, [(n, channel, fields)], signed)
        return row

    def bob_says_all(self, ns: Iterable[int], channel: str = "general") -> list[Row]:
        """BOB's messages ``ns`` in one channel; their stored rows."""
        items: list[tuple[int, str, dict[str, Any]]] = [(n, channel, {}) for n in ns]
        rows: list[Row] = []
        for i in range(0, len(items), MAX_POST_BATCH):
            rows += self._append("", items[i : i + MAX_POST_BATCH])
        return rows

    def _append(
        self, circle_id: str, items: list[tuple[int, str, dict[str, Any]]], signed: bool = True
    ) -> list[Row]:
        circle = self.db.circle(circle_id or self.circle_id)
        assert circle is not None
        wire = []
        for n, channel, fields in items:
            msg: dict[str, Any] = {
                "msg_id": f"{n:032x}",
                "channel_id": channel,
                "display_name": "bob",
                "created_ts": T0 + n,
                "text": f"message {n}",
            } | fields
            composed = compose_message(
                circle.secret,
                circle_id=circle.circle_id,
                author_node_id=BOB,
                encrypt=True,
                key=BOB_KEY if signed else None,
                **msg,
            )
            wire.append(to_wire(composed))
        outcome = self.handle(OP_APPEND, {"origin": "gossip", "msgs": wire})
        assert outcome.reply["results"] == ["stored"] * len(wire), outcome.reply
        return outcome.stored

    def set_read_mark(self, channel: str, store_seq: int, circle_id: str = "") -> None:
        """A channel's read mark, as an earlier ui session left it."""
        key = mark_key(circle_id or self.circle_id, channel)
        self.handle(OP_CURSOR, {"key": key, "value": store_seq})

    def seq_of(self, msg: int | str) -> int:
        """The store_seq the store gave BOB's message n, or a message by its id."""
        seq = self.db.seq_of(f"{msg:032x}" if isinstance(msg, int) else msg)
        assert seq is not None, f"the store holds no message {msg!r}"
        return seq


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UiStore]:
    """This node's store, empty: no circle yet."""
    ui_store = UiStore(tmp_path / "felund.db")
    yield ui_store
    ui_store.close()


@pytest.fixture
def circle(store: UiStore) -> str:
    """The usual circle in the store (see ``UiStore.friends``); its id."""
    return store.friends()


@pytest.fixture(scope="module")
def example_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiStore]:
    """The usual circle's store, for a property test (whose examples cannot take function
    fixtures). Each example starts a model from it and leaves it as it was: starting
    only reads, and moves #general's read mark to where it already is after the first."""
    ui_store = UiStore(tmp_path_factory.mktemp("ui") / "felund.db")
    ui_store.friends()
    yield ui_store
    ui_store.close()


def started(store: UiStore, rows: int = 24, cols: int = 100) -> Model:
    """A model attached to the store, everything loaded."""
    new_ids = iter(f"{i:032x}" for i in range(10**6, 2 * 10**6))
    model = Model(ME, clock=lambda: float(T0 + 500), new_msg_id=lambda n, ts: next(new_ids))
    model.on_resize(rows, cols)
    store.drive(model, model.start())
    return model


def made_up_row(circle_id: str, seq: int, channel: str = "general", **fields: Any) -> Row:
    """A row shaped as chat.msg.stored carries it, but not from the store: for the
    property tests, whose point is that any row is survived (the store would refuse some)."""
    base: Row = {
        "store_seq": seq,
        "msg_id": f"{seq:032x}",
        "circle_id": circle_id,
        "channel_id": channel,
        "author_node_id": BOB,
        "display_name": "bob",
        "created_ts": T0 + seq,
        "text": f"message {seq}",
        "origin": "gossip",
    }
    return base | fields


def typed(model: Model, text: str) -> list[Effect]:
    """Type text, a key a character."""
    effects: list[Effect] = []
    for ch in text:
        effects += model.on_key(ch)
    return effects


def enter(model: Model, text: str) -> list[Effect]:
    """Type a line and press Enter."""
    return typed(model, text) + model.on_key("ENTER")


def calls(effects: list[Effect], op: str) -> list[Call]:
    """The calls of one operation among effects (of every operation if op is "")."""
    return [e for e in effects if isinstance(e, Call) and op in ("", e.op)]


def screen_text(model: Model, rows: int = 24, cols: int = 100) -> str:
    """The screen as text, a line each."""
    return "\n".join("".join(t for t, _ in line) for line in render(model, rows, cols))
