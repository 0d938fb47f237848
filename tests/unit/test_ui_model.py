"""The ui's view model, driven by keys and by the real store's answers (no processes)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felund.protocol import (
    CONTROL_CHANNEL,
    OP_BLOCKS,
    OP_CHANNELS,
    OP_CIRCLE_CREATE,
    OP_CIRCLE_JOIN,
    OP_CIRCLE_LEAVE,
    OP_CIRCLES,
    OP_CONTROL,
    OP_CURSOR,
    OP_INBOX,
    OP_INVITE,
    OP_MEMBER_REMOVE,
    OP_POST,
    OP_SETTINGS,
    OP_WHO,
)
from felund.ui.model import DETACH_CONFIRM_S, KEYS, Call, Model, Quit
from felund.ui.pane import FAILED, PENDING, STORED
from felund.ui.render import render
from felund.ui.view import RECONNECTED_SHOWN_S
from felund.v1 import chatmodel, events
from tests.unit.ui_store import (
    BOB,
    ME,
    T0,
    UiStore,
    calls,
    circle,
    enter,
    example_store,
    made_up_row,
    screen_text,
    started,
    store,
    typed,
    utc,
)

__all__ = ["circle", "example_store", "store", "utc"]  # fixtures, used here


# --- start and loading ------------------------------------------------------------
def test_start_asks_for_circles_and_settings() -> None:
    model = Model(ME, clock=lambda: float(T0))
    effects = model.start()
    assert all(isinstance(c, Call) for c in effects)
    assert [(c.op, c.body) for c in calls(effects, "")] == [
        (OP_CIRCLES, {}),
        (OP_SETTINGS, {}),
        (OP_BLOCKS, {}),
    ]


def test_loads_member_channels_with_their_read_marks(store: UiStore, circle: str) -> None:
    model = started(store)
    inboxes = {c.body["channel_id"]: c.body for c in store.ops_called(OP_INBOX)}
    assert set(inboxes) == {"general", "dev"}  # not ops: not a member
    assert inboxes["dev"] == {"circle_id": circle, "channel_id": "dev", "limit": 5000}
    reads = [c.body for c in store.ops_called(OP_CURSOR) if "value" not in c.body]
    assert {"key": f"ui.read.{circle}.dev"} in reads
    assert model.mode == "chat"
    assert model.active == (circle, "general")
    assert model.display_name == "alice"
    assert [v.channel_id for v in model.sidebar()[0][1]] == ["general", "dev"]


def test_unread_counts_others_messages_above_the_read_mark(store: UiStore, circle: str) -> None:
    store.set_read_mark("dev", store.seq_of(12))  # as an earlier session left it
    store.i_say(16, "dev")
    model = started(store)
    dev = model.circles[circle].channels["dev"]
    assert dev.pane.unread() == 3  # 13, 14, 15; 16 is this node's own
    model.on_chat_msg_stored([store.bob_says(17, "dev"), store.i_say(18, "dev")])
    assert dev.pane.unread() == 4
    assert "#dev (4)" in screen_text(model)


def test_switching_writes_the_read_mark_once(store: UiStore, circle: str) -> None:
    model = started(store)
    effects = model.on_key("M-2")
    assert model.active == (circle, "dev")
    writes = calls(effects, OP_CURSOR)
    key = f"ui.read.{circle}.dev"
    assert [w.body for w in writes] == [{"key": key, "value": store.seq_of(15)}]
    assert model.circles[circle].channels["dev"].pane.unread() == 0
    store.drive(model, effects)
    assert store.handle(OP_CURSOR, {"key": key}).reply == {"value": store.seq_of(15)}
    assert calls(model.on_key("M-1") + model.on_key("M-2"), OP_CURSOR) == []  # nothing new


def test_arrivals_in_the_active_channel_write_one_mark_per_batch(
    store: UiStore, circle: str
) -> None:
    model = started(store)
    arrived = store.bob_says_all(range(20, 30))
    effects = model.on_chat_msg_stored(arrived)
    writes = calls(effects, OP_CURSOR)
    assert len(writes) == 1
    assert writes[0].body["value"] == arrived[-1]["store_seq"]


def test_arrivals_while_scrolled_up_stay_unread(store: UiStore) -> None:
    store.friends(general=range(1, 200), dev=())
    model = started(store, rows=10)
    model.on_key("PGUP")
    arrived = store.bob_says(300)
    assert calls(model.on_chat_msg_stored([arrived]), OP_CURSOR) == []
    assert model.pane().unread() == 1
    effects = model.on_key("END")
    assert [c.body["value"] for c in calls(effects, OP_CURSOR)] == [arrived["store_seq"]]


def test_rows_are_deduplicated_and_sorted(store: UiStore, circle: str) -> None:
    model = started(store)
    pane = model.pane()
    before = len(pane)
    forty, forty_one = store.bob_says(40, created_ts=T0 + 2), store.bob_says(41)
    model.on_chat_msg_stored([forty, forty, forty_one])
    model.on_chat_msg_stored([forty_one])
    assert len(pane) == before + 2
    assert pane.keys == sorted(pane.keys)
    assert pane.keys[2] == (T0 + 2, 0, forty["store_seq"], forty["msg_id"])  # by created_ts


def lines_of(model: Model, *texts: str) -> list[str]:
    """The texts in the order the screen shows them (each must be on it)."""
    screen = screen_text(model)
    assert all(t in screen for t in texts), screen
    return sorted(texts, key=screen.index)


def test_messages_of_one_second_show_in_the_stores_order(store: UiStore, circle: str) -> None:
    model = started(store)
    # msg_ids are random within a second: here the later one's sorts first
    first = store.bob_says(40, created_ts=T0 + 500, msg_id="f" * 32)
    second = store.bob_says(41, created_ts=T0 + 500, msg_id="e" * 32)
    assert first["store_seq"] < second["store_seq"]
    model.on_chat_msg_stored([second, first])  # in any order
    assert lines_of(model, "message 41", "message 40") == ["message 40", "message 41"]
    # A ui attached later, loading the inbox, shows them the same way.
    assert lines_of(started(store), "message 41", "message 40") == ["message 40", "message 41"]


def test_a_sent_message_shows_after_those_stored_in_its_second(store: UiStore, circle: str) -> None:
    model = started(store)  # its clock: T0 + 500; its new msg_ids sort before "e" * 32
    model.on_chat_msg_stored([store.bob_says(40, created_ts=T0 + 500, msg_id="f" * 32)])
    (post,) = calls(enter(model, "mine"), OP_POST)
    assert lines_of(model, "mine", "message 40") == ["message 40", "mine"]
    # Another's message stored while mine is pending comes before it too ...
    model.on_chat_msg_stored([store.bob_says(41, created_ts=T0 + 500, msg_id="e" * 32)])
    assert lines_of(model, "mine", "message 40", "message 41") == [
        "message 40",
        "message 41",
        "mine",
    ]
    # ... and mine, stored after it, stays last.
    store.drive(model, [post])
    assert model.pane().msgs[post.body["msgs"][0]["msg_id"]].state == STORED
    assert lines_of(model, "mine", "message 40", "message 41")[-1] == "mine"
    assert model.pane().keys == sorted(model.pane().keys)


def test_a_pending_message_moves_to_its_place_once_stored(store: UiStore, circle: str) -> None:
    model = started(store)
    (a,) = calls(enter(model, "sent first"), OP_POST)
    (b,) = calls(enter(model, "sent second"), OP_POST)
    assert lines_of(model, "sent second", "sent first") == ["sent first", "sent second"]
    store.drive(model, [b])  # the store took the second one first
    assert lines_of(model, "sent second", "sent first") == ["sent second", "sent first"]
    store.drive(model, [a])
    assert lines_of(model, "sent second", "sent first") == ["sent second", "sent first"]
    # A ui attached later agrees.
    later = started(store)
    assert lines_of(later, "sent second", "sent first") == ["sent second", "sent first"]


def test_a_pane_scrolled_to_a_message_that_moves_stays_on_it(store: UiStore, circle: str) -> None:
    model = started(store, rows=10)
    (a,) = calls(enter(model, "sent first"), OP_POST)
    calls(enter(model, "sent second"), OP_POST)
    pane = model.pane()
    pane.scroll_up(1, 7, 79)  # "sent first" ends the pane
    assert "sent first" in "".join(t for t, _ in pane.visible(7, 79)[-1])
    store.drive(model, [a])  # stored: its key changes, its place does not
    assert pane.anchor == pane.msgs[a.body["msgs"][0]["msg_id"]].key
    last = "".join(t for t, _ in pane.visible(7, 79)[-1])
    assert "sent first" in last and "\u2026" not in last  # and drawn anew, as stored


def test_rows_of_unlisted_circles_are_kept_until_it_is_listed(store: UiStore, circle: str) -> None:
    model = started(store)
    work = store.join_work()  # by `felund join`: the ui has not listed it yet
    arrived = store.bob_says(50, circle_id=work)
    model.on_chat_msg_stored([arrived])
    (listing,) = calls(model.on_chat_circle_changed(), OP_CIRCLES)
    loads = store.answer(model, listing)
    general = model.circles[work].channels["general"]
    assert arrived["msg_id"] in general.pane.msgs  # kept: the circle's inbox is not read yet
    store.drive(model, loads)
    assert list(general.pane.msgs) == [arrived["msg_id"]]


def test_a_left_circle_disappears(store: UiStore, circle: str) -> None:
    work = store.join_work()
    model = started(store)
    model.on_key("C-p")  # around: the last channel, in the other circle
    assert model.active == (work, "general")
    store.handle(OP_CIRCLE_LEAVE, {"circle_id": work})  # by `felund circle leave`
    store.drive(model, model.on_chat_circle_changed())
    assert list(model.circles) == [circle]
    assert model.active == (circle, "general")


def test_circles_changed_keeps_one_call_in_flight(store: UiStore, circle: str) -> None:
    model = started(store)
    first = calls(model.on_chat_circle_changed(), OP_CIRCLES)
    assert len(first) == 1
    assert model.on_chat_circle_changed() == []
    again = store.answer(model, first[0])
    assert [c.op for c in calls(again, OP_CIRCLES)] == [OP_CIRCLES]


def test_control_rows_refresh_channels_at_most_once_in_flight(store: UiStore, circle: str) -> None:
    model = started(store)
    event = {"t": "CHANNEL_EVT", "op": "create", "channel_id": "new"}
    control = [store.bob_does(event, 60 + i) for i in range(3)]
    effects = model.on_chat_msg_stored(control[:2]) + model.on_chat_msg_stored(control[2:])
    refreshes = calls(effects, OP_CHANNELS)
    assert len(refreshes) == 1
    assert all(r["msg_id"] not in model.pane().msgs for r in control)
    # Meanwhile `felund channel join new` (after BOB made it: events apply in time order).
    store.i_do({"t": "CHANNEL_EVT", "op": "join", "channel_id": "new"}, at=T0 + 100)
    follow = store.answer(model, refreshes[0])
    assert len(calls(follow, OP_CHANNELS)) == 1  # the rows that came meanwhile
    assert any(c.body.get("channel_id") == "new" for c in calls(follow, OP_INBOX))


def test_a_rename_row_names_the_person(store: UiStore, circle: str) -> None:
    model = started(store)
    rename = store.bob_does({"t": "CHANNEL_EVT", "op": "rename", "display_name": "Robert"}, 70)
    model.on_chat_msg_stored([rename])
    assert model.circles[circle].names[BOB][1] == "Robert"


def test_a_blocked_nodes_messages_are_not_shown_and_come_back_when_unblocked(
    store: UiStore, circle: str
) -> None:
    model = started(store)
    general = model.circles[circle].channels

    def shown(channel: str = "general") -> set[str]:
        return {m.text for m in general[channel].pane.msgs.values()}

    assert "message 5" in shown()  # the path is live: shown before the block
    store.handle(OP_BLOCKS, {"block": BOB})
    store.drive(model, model.on_sys_settings_changed())  # as the store's event tells it
    assert not shown() and not shown("dev")
    assert general["dev"].pane.unread() == 0
    store.drive(model, model.on_chat_msg_stored([store.bob_says(30)]))  # new ones neither
    assert not shown()
    store.handle(OP_BLOCKS, {"unblock": BOB})
    store.drive(model, model.on_sys_settings_changed())
    assert {"message 5", "message 30"} <= shown()


# --- sending ------------------------------------------------------------------------
def test_a_message_is_pending_then_stored_by_the_reply(store: UiStore, circle: str) -> None:
    model = started(store)
    effects = enter(model, "hello there")
    (post,) = calls(effects, OP_POST)
    msg = post.body["msgs"][0]
    assert post.body["circle_id"] == circle
    assert post.body["channel_id"] == "general"
    assert msg["text"] == "hello there"
    assert msg["created_ts"] == T0 + 500
    assert model.pane().msgs[msg["msg_id"]].state == PENDING
    assert "\u2026 " in screen_text(model)
    store.answer(model, post)
    stored = model.pane().msgs[msg["msg_id"]]
    assert (stored.state, stored.store_seq) == (STORED, store.seq_of(msg["msg_id"]))
    assert "\u2026 " not in screen_text(model)


def test_the_stored_row_may_come_before_the_reply_and_it_shows_once(
    store: UiStore, circle: str
) -> None:
    model = started(store)
    (post,) = calls(enter(model, "hi"), OP_POST)
    msg = post.body["msgs"][0]
    before = len(model.pane())
    outcome = store.run(post)  # chat.msg.stored overtakes the reply
    model.on_chat_msg_stored(outcome.stored)
    assert len(model.pane()) == before
    assert model.pane().msgs[msg["msg_id"]].state == STORED
    model.on_reply(post.token, outcome.reply)
    assert len(model.pane()) == before
    assert screen_text(model).count("alice: hi") == 1


def test_a_refused_message_is_marked_failed_with_the_reason(store: UiStore, circle: str) -> None:
    model = started(store)
    store.handle(OP_CIRCLE_LEAVE, {"circle_id": circle})  # by `felund circle leave`, unseen yet
    (post,) = calls(enter(model, "nope"), OP_POST)
    store.drive(model, [post])
    assert model.pane().msgs[post.body["msgs"][0]["msg_id"]].state == FAILED
    text = screen_text(model)
    assert "! " in text
    assert f"not sent: this node is not in circle {circle!r}" in text


def test_blank_lines_are_not_sent_and_too_long_ones_are_refused_here(
    store: UiStore, circle: str
) -> None:
    model = started(store)
    assert calls(enter(model, "   "), OP_POST) == []
    model.input.set("x" * 8001)
    assert calls(model.on_key("ENTER"), OP_POST) == []
    assert model.status.startswith("too long to send")
    assert model.status_style == "error"


def test_a_double_slash_sends_a_slash(store: UiStore, circle: str) -> None:
    (post,) = calls(enter(started(store), "//shrug"), OP_POST)
    assert post.body["msgs"][0]["text"] == "/shrug"


# --- commands -----------------------------------------------------------------------
def test_unknown_command_is_a_notice(store: UiStore, circle: str) -> None:
    model = started(store)
    assert enter(model, "/foo bar") == []
    assert model.status == "unknown command /foo \u2014 /help lists them"
    assert model.status_style == "error"


def test_channel_create_writes_the_event_as_the_cli_does(store: UiStore, circle: str) -> None:
    model = started(store)
    (call,) = calls(enter(model, "/channel create secret key hunter2 shared"), OP_CONTROL)
    assert call.body["circle_id"] == circle
    assert call.body["created_ts"] == T0 + 500
    assert call.body["event"] == events.channel_event(
        "create", circle, "secret", ME, access="key", key="hunter2"
    )
    assert call.body["event"]["key_hash"] == chatmodel.key_hash(circle, "secret", "hunter2")
    # The key itself goes to the store (kept there, to read a private key channel), not out.
    assert call.body["channel_key"] == "hunter2"
    (join,) = calls(enter(model, "/channel join other hunter3"), OP_CONTROL)
    assert join.body["channel_key"] == "hunter3" and "hunter3" not in str(join.body["event"])


def test_channel_join_switches_once_a_member(store: UiStore, circle: str) -> None:
    model = started(store)
    effects = enter(model, "/channel join #ops")
    (call,) = calls(effects, OP_CONTROL)
    assert call.body["event"] == events.channel_event("join", circle, "ops", ME)
    store.drive(model, effects)
    assert model.active == (circle, "ops")
    assert model.status == "joined #ops"
    store.drive(model, enter(model, "/channels"))
    text = screen_text(model)
    assert "* #general  public  everyone" in text
    assert "* #ops  public  2 members" in text  # bob made it, we joined


def test_approve_finds_a_member_who_never_posted(store: UiStore) -> None:
    """Issue 13: `/channel approve vip carol` said "no single person" for a member whose
    only message was her request; the store resolves whom an approve names, for the ui too."""
    circle = store.circle_id = store.create_circle("friends")
    store.i_do({"t": "CHANNEL_EVT", "op": "create", "channel_id": "vip", "access_mode": "invite"})
    request = {"t": "CHANNEL_EVT", "op": "request", "channel_id": "vip"}
    store.bob_says(
        1,
        CONTROL_CHANNEL,
        text=chatmodel.event_text({**request, "actor_node_id": BOB}),
        display_name="carol",
    )
    model = started(store)
    assert all(name != "carol" for _, name in model.circles[circle].names.values())
    effects = enter(model, "/channel approve vip carol")
    (call,) = calls(effects, OP_CONTROL)
    assert call.body["event"]["target_node_id"] == "carol"  # resolved by the store
    store.drive(model, effects)
    assert model.status == "approved carol in #vip"
    vip = next(
        c
        for c in store.ops.channels({"circle_id": circle}).reply["channels"]
        if c["channel_id"] == "vip"
    )
    assert vip["members"] == sorted([ME, BOB])
    store.drive(model, enter(model, "/channel approve vip dave"))
    assert model.status.startswith('no one in this circle is "dave"'), model.status
    assert model.status_style == "error"


def test_who_shows_roles_and_a_refusal_says_who_can(store: UiStore, circle: str) -> None:
    """Issue 15: this node made "friends" (it owns it); "work" is BOB's, written unsigned
    (as a v1 client writes): it has no owner, and BOB shows without a key."""
    model = started(store)
    store.drive(model, enter(model, "/role moderator bob"))
    assert model.status == "bob is now a moderator", model.status
    store.drive(model, enter(model, "/who"))
    text = screen_text(model)
    assert f"alice  {ME[:8]}  owner  last seen" in text, text
    assert f"bob  {BOB[:8]}  moderator  last seen" in text, text
    assert "no key seen" not in text
    work = store.join_work()
    create = {"t": "CHANNEL_EVT", "op": "create", "channel_id": "den", "actor_node_id": BOB}
    text = chatmodel.event_text(create)
    store.bob_says(1, CONTROL_CHANNEL, work, signed=False, text=text, msg_id="d" * 32)
    store.drive(model, model.on_chat_circle_changed())
    store.drive(model, enter(model, "/circle switch work"))
    store.drive(model, enter(model, "/who"))
    text = screen_text(model)
    assert f"?bob  {BOB[:8]}  last seen" in text, text
    assert "(? = no key seen: what they write is unverified)" in text, text
    store.drive(model, enter(model, "/role moderator bob"))
    assert model.status.startswith("this circle has no owner"), model.status
    store.drive(model, enter(model, "/channel approve den bob"))
    assert model.status == "only #den's owner (bob) can approve into #den", model.status
    assert model.status_style == "error"


def test_a_sealed_row_is_shown_nowhere_until_it_opens(store: UiStore, circle: str) -> None:
    """Issue 16: a row kept sealed (its epoch's secret not held yet) has no text: the
    stored event carries it for gossip, and the screen skips it; once opened, the store
    stores it again (a new store_seq) and it shows."""
    model = started(store)
    seq = store.db.last_seq
    sealed = made_up_row(circle, seq + 1, text="", display_name="", sealed=True)
    model.on_chat_msg_stored([sealed])
    assert sealed["msg_id"] not in model.circles[circle].channel("general").pane.msgs
    opened = made_up_row(circle, seq + 2, msg_id=sealed["msg_id"], text="opened at last")
    model.on_chat_msg_stored([opened])
    assert "opened at last" in screen_text(model)


def channels_of(store: UiStore) -> dict[str, dict[str, Any]]:
    """The active circle's channels as the store lists them, by name."""
    listed = store.ops.channels({"circle_id": store.circle_id}).reply["channels"]
    return {c["channel_id"]: c for c in listed}


def test_a_key_or_invite_channel_is_private_when_every_member_can_read_it(
    store: UiStore,
) -> None:
    """Issue 16: as `felund channel create`, the ui makes a key or invite channel private
    unless told shared; it asks the store who is in the circle first (here: only this
    node, which can read a private channel), and /channels says it is private."""
    store.circle_id = store.create_circle("solo")
    model = started(store)
    effects = enter(model, "/channel create vip invite")
    assert calls(effects, OP_CONTROL) == [] and calls(effects, OP_WHO) != []
    store.drive(model, effects)
    assert model.status == "created #vip (private)", model.status
    assert channels_of(store)["vip"]["private"] is True
    store.drive(model, enter(model, "/channels"))
    assert "* #vip  invite private  " in screen_text(model), screen_text(model)
    store.drive(model, enter(model, "/channel create pub"))  # public: nothing to ask
    assert model.status == "created #pub" and channels_of(store)["pub"]["private"] is False
    assert len(store.ops_called(OP_WHO)) == 1


def test_a_channel_some_members_cannot_read_is_not_made_until_private_or_shared_is_said(
    store: UiStore, circle: str
) -> None:
    """Issue 16: bob (his client announced no key to unwrap with) could not read a
    private channel: the ui makes nothing and names him; said private or shared, it makes
    the channel as asked, without asking the store again."""
    model = started(store)
    store.drive(model, enter(model, "/channel create ops2 key k1"))
    text = list(model.pane().msgs.values())[-1].text  # the notice, unwrapped
    assert text.startswith("not created: #ops2 would be private"), text
    assert f"1 member(s) use a client that cannot read a private channel (bob ({BOB[:12]}))" in text
    assert "repeat it with private (private anyway) or shared" in text, text
    assert model.status_style == "error"
    assert "ops2" not in channels_of(store) and store.ops_called(OP_CONTROL) == []
    store.drive(model, enter(model, "/channel create ops2 key k1 private"))
    assert model.status == "created #ops2 (private)", model.status
    store.drive(model, enter(model, "/channel create den invite shared"))
    assert model.status == "created #den", model.status
    listed = channels_of(store)
    assert (listed["ops2"]["private"], listed["den"]["private"]) == (True, False)
    assert len(store.ops_called(OP_WHO)) == 1
    assert model.active == (circle, "den")
    usage = "usage: /channel create <name> [public|key|invite] [key] [private|shared]"
    for line in ("/channel create k key s private now", "/channel create p invite shared now"):
        assert calls(enter(model, line), OP_CONTROL) == [] and model.status == usage, line


def test_kick_says_what_it_will_do_and_only_the_same_kick_soon_after_does_it(
    store: UiStore, circle: str
) -> None:
    """Issue 16: /kick asks the store what the removal would do and says it; the same
    /kick again within 10 s of that removes (the ui's way of asking, as Ctrl+Q's)."""
    now = [float(T0 + 500)]
    model = Model(ME, clock=lambda: now[0])
    model.on_resize(24, 100)
    store.drive(model, model.start())

    def epoch() -> int:
        newest = store.ops.keys(circle).newest
        return newest.n if newest else -1

    store.drive(model, enter(model, "/kick bob"))
    text = screen_text(model)
    assert "this removes bob" in text and "/kick bob again within 10 s to remove" in text, text
    assert epoch() == 0
    now[0] += 11  # too late: said again, nothing done
    store.drive(model, enter(model, "/kick bob"))
    assert epoch() == 0
    assert [c.body.get("dry_run") for c in store.ops_called(OP_MEMBER_REMOVE)] == [True, True]
    now[0] += 9
    store.drive(model, enter(model, "/kick bob"))
    assert epoch() == 1
    assert model.status.startswith("removed bob"), model.status
    store.drive(model, enter(model, "/kick alice"))
    assert model.status == "the owner cannot be removed", model.status
    assert model.status_style == "error"


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("/channel create k key", "a key channel needs a key"),
        ("/channel create Bad!", "channel names are 1 to 32"),
        ("/channel create p public private", "private and shared go with a key or invite"),
        ("/channel create p public shared", "private and shared go with a key or invite"),
        ("/channel leave general", "#general cannot be left"),
        ("/channel switch ops", "you are not in #ops"),
        ("/channel switch nowhere", "there is no channel #nowhere"),
        ("/channel", "usage: /channel"),
        ("/join", "usage: /join"),
        ("/circle switch 9", "no circle '9'"),
        ("/name " + "x" * 65, "names are 1 to 64"),
    ],
)
def test_command_mistakes_are_notices(store: UiStore, circle: str, line: str, error: str) -> None:
    model = started(store)
    assert calls(enter(model, line), OP_CONTROL) == []
    assert model.status.startswith(error), model.status
    assert model.status_style == "error"


def test_rename_writes_a_rename_in_every_circle(store: UiStore, circle: str) -> None:
    work = store.join_work()
    model = started(store)
    effects = calls(enter(model, "/name Alice B."), OP_CONTROL)
    assert {c.body["circle_id"] for c in effects} == {circle, work}
    assert all(
        c.body["event"] == events.rename_event(c.body["circle_id"], ME, "Alice B.") for c in effects
    )
    enter(model, "/name")
    assert model.status == "you are 'Alice B.'"


def test_join_with_a_bad_code_shows_the_store_text(store: UiStore, circle: str) -> None:
    model = started(store)
    (call,) = calls(enter(model, "/join felund1.garbage"), OP_CIRCLE_JOIN)
    assert call.body == {"code": "felund1.garbage"}
    store.drive(model, [call])
    assert model.status == "invite code is damaged (bad JSON)"


def test_who_lists_people_into_the_pane(store: UiStore, circle: str) -> None:
    model = started(store)
    effects = enter(model, "/who dev")
    (call,) = calls(effects, OP_WHO)
    assert call.body == {"circle_id": circle, "channel_id": "dev"}
    store.drive(model, effects)
    assert "in #dev:" in screen_text(model)
    assert f"bob  {BOB[:8]}  last seen 2023-11-14 22:13" in screen_text(model)
    assert model.status == ""  # not its heading alone, left below the pane


def test_circles_and_circle_switch(store: UiStore, circle: str) -> None:
    work = store.join_work()
    model = started(store)
    enter(model, "/circles")
    assert "2. work" in screen_text(model)
    enter(model, "/circle switch 2")
    assert model.active == (work, "general")
    enter(model, "/circle switch friends")
    assert model.active == (circle, "general")


def test_quit_by_command_and_key(store: UiStore, circle: str) -> None:
    model = started(store)
    assert enter(model, "/quit") == [Quit()]
    assert model.on_key("C-q") == [Quit()]


# At 80 columns; wider terminals say why too, narrower ones less (test_ui_irc).
DETACH_WARNING = (
    "2 message(s) not yet acknowledged by the node \u2014 Ctrl+Q again to detach anyway"
)


def test_detaching_with_pending_messages_asks_twice(store: UiStore, circle: str) -> None:
    model = started(store)
    now = [float(T0 + 500)]
    model.clock = lambda: now[0]
    (first,) = calls(enter(model, "one"), OP_POST)
    (second,) = calls(enter(model, "two"), OP_POST)
    assert model.on_key("C-q") == []
    assert (model.status, model.status_style) == (DETACH_WARNING, "error")
    now[0] += DETACH_CONFIRM_S - 1
    assert model.on_key("C-q") == [Quit()]  # again, soon enough: detach anyway

    now[0] += 60
    assert enter(model, "/quit") == []  # long after: a warning again, by the command too
    now[0] += DETACH_CONFIRM_S + 1
    assert model.on_key("C-q") == []  # too late to count as the second: warned again
    assert model.status == DETACH_WARNING

    # The stored row may come before the answer: that message is acknowledged.
    model.on_chat_msg_stored(store.run(first).stored)
    assert model.pending_posts() == 1
    now[0] += 60
    assert model.on_key("C-q") == []
    assert model.status.startswith("1 message(s) not yet acknowledged")
    store.drive(model, [second])
    assert model.pending_posts() == 0
    now[0] += 60
    assert model.on_key("C-q") == [Quit()]  # nothing pending: at once


def test_a_refused_message_does_not_hold_detaching(store: UiStore, circle: str) -> None:
    model = started(store)
    (post,) = calls(enter(model, "lost"), OP_POST)
    model.on_error(post.token, "timeout", "the node did not answer")
    assert model.pane().msgs[post.body["msgs"][0]["msg_id"]].state == FAILED
    assert model.on_key("C-q") == [Quit()]


# --- bus events --------------------------------------------------------------------------
def test_gossip_heartbeat_sets_the_peer_count(store: UiStore, circle: str) -> None:
    model = started(store)
    model.dirty = False
    assert model.on_sys_svc_heartbeat({"service": "gossip", "peers": 3, "sessions": 1}) == []
    assert (model.peers, model.dirty) == (3, True)
    assert "peers 3" in screen_text(model).splitlines()[0]
    model.dirty = False
    model.on_sys_svc_heartbeat({"service": "gossip", "peers": 3})
    assert not model.dirty  # nothing changed: nothing to draw
    model.on_sys_svc_heartbeat({"service": "gossip", "sessions": 2})  # a gossip without peers
    assert model.peers == 2
    for body in [
        {"service": "store", "peers": 9},
        {"service": "relay-sync", "sessions": 9},
        {"peers": 9},
        {"service": "gossip", "peers": "9"},
        {"service": "gossip", "peers": True},
        {"service": "gossip", "peers": -1},
        {"service": "gossip", "peers": None, "sessions": 9},
        {"service": "gossip"},
        ["gossip", 9],
        None,
        "gossip",
    ]:
        assert model.on_sys_svc_heartbeat(body) == []
        assert model.peers == 2, body


def test_gossip_heartbeat_gives_the_active_circle_s_peers_and_last_message(
    store: UiStore, circle: str
) -> None:
    model = started(store)
    report = {circle: {"peers": 1, "last_message_ts": T0 + 60}, "f" * 64: {"peers": 7}}
    model.on_sys_svc_heartbeat({"service": "gossip", "peers": 8, "connectivity": report})
    assert model.gossip == {circle: (1, float(T0 + 60))}  # only circles of ours
    assert "peers 1, last message 22:14" in screen_text(model).splitlines()[0]
    for entry in [{"peers": -1}, {"peers": "1"}, None, {"last_message_ts": 5}]:
        model.on_sys_svc_heartbeat({"service": "gossip", "connectivity": {circle: entry}})
        assert model.gossip == {}, entry
    for ts in [float("nan"), float("inf"), -5, "12", 10**12]:
        body = {circle: {"peers": 2, "last_message_ts": ts}}
        model.on_sys_svc_heartbeat({"service": "gossip", "connectivity": body})
        assert model.gossip == {circle: (2, None)}, ts
        assert "peers 2  " in screen_text(model).splitlines()[0]


def test_a_silent_store_shows_as_disconnected_until_it_is_back(store: UiStore, circle: str) -> None:
    model = started(store)
    now = [float(T0 + 500)]
    model.clock = lambda: now[0]
    model.on_sys_svc_heartbeat({"service": "store"})
    now[0] += 2.9
    model.on_tick()
    assert model.disconnected_since is None and "peers 0" in screen_text(model).splitlines()[0]
    now[0] += 0.2  # three heartbeats missed
    assert model.on_tick() == []
    header = screen_text(model).splitlines()[0]
    assert "disconnected from the node since 22:21" in header, header
    assert model.status_style == "error" and "goes out once the node is back" in model.status
    (post,) = calls(enter(model, "typed while away"), OP_POST)
    assert model.pending_posts() == 1  # waits (calls.Worker retries a post until answered)
    now[0] += 600
    model.on_tick()
    assert model.disconnected_since == T0 + 500  # since the last heartbeat, not each tick
    effects = model.on_sys_svc_heartbeat({"service": "store"})
    assert [c.op for c in calls(effects, OP_CIRCLES)] == [OP_CIRCLES]  # what changed meanwhile
    assert model.disconnected_since is None
    assert (model.status, model.status_style) == ("reconnected to the node at 22:31", "notice")
    assert "reconnected at 22:31" in screen_text(model).splitlines()[0]
    for _ in range(int(RECONNECTED_SHOWN_S) + 1):  # heartbeats go on: it is back for good
        now[0] += 1
        model.on_sys_svc_heartbeat({"service": "store"})
        model.on_tick()
    assert "peers 0" in screen_text(model).splitlines()[0]
    store.drive(model, [post])  # the worker's retry, answered at last
    assert model.pending_posts() == 0


# --- keys ----------------------------------------------------------------------------
def test_completion_cycles_commands_then_channels_and_names(store: UiStore, circle: str) -> None:
    model = started(store)
    typed(model, "/ch")
    model.on_key("TAB")
    assert model.input.text == "/channel"
    model.on_key("TAB")
    assert model.input.text == "/channels"
    model.on_key("TAB")
    assert model.input.text == "/channel"
    typed(model, " jo")
    model.on_key("TAB")
    assert model.input.text == "/channel join "
    typed(model, "de")
    model.on_key("TAB")
    assert model.input.text == "/channel join dev "
    for line, done in (("x invite p", "x invite private "), ("x key k s", "x key k shared ")):
        model.on_key("C-u")
        typed(model, "/channel create " + line)
        model.on_key("TAB")
        assert model.input.text == "/channel create " + done
    model.on_key("C-u")
    typed(model, "hi @b")
    model.on_key("TAB")
    assert model.input.text == "hi @bob "
    model.on_key("C-u")
    typed(model, "zz")
    model.on_key("TAB")
    assert model.input.text == "zz"


def test_history_up_and_down(store: UiStore, circle: str) -> None:
    model = started(store)
    enter(model, "one")
    enter(model, "two")
    typed(model, "dra")
    model.on_key("UP")
    assert model.input.text == "two"
    model.on_key("UP")
    model.on_key("UP")
    assert model.input.text == "one"
    model.on_key("DOWN")
    model.on_key("DOWN")
    assert model.input.text == "dra"


def test_editing_keys(store: UiStore, circle: str) -> None:
    model = started(store)
    typed(model, "hello big world")
    model.on_key("C-w")
    assert model.input.text == "hello big "
    model.on_key("HOME")
    model.on_key("DELETE")
    model.on_key("END")
    model.on_key("BACKSPACE")
    assert model.input.text == "ello big"
    model.input.set("cafe\u0301")
    model.on_key("LEFT")
    assert model.input.cursor == 3  # before the e and its accent, as one character
    model.on_key("BACKSPACE")
    assert model.input.text == "cae\u0301"
    model.on_key("C-u")
    assert model.input.text == ""


def test_ctrl_n_and_p_go_around_the_sidebar(store: UiStore, circle: str) -> None:
    model = started(store)
    model.on_key("C-n")
    assert model.active == (circle, "dev")
    model.on_key("C-n")
    assert model.active == (circle, "general")
    model.on_key("C-p")
    assert model.active == (circle, "dev")
    assert model.on_key("M-9") == []
    assert model.active == (circle, "dev")


def test_page_up_and_down_and_end(store: UiStore) -> None:
    store.friends(general=range(1, 500), dev=())
    model = started(store, rows=12)  # a pane of 9 lines
    pane = model.pane()
    model.on_key("PGUP")
    assert not pane.at_bottom
    assert pane.visible(9, 79)[-1] == pane.lines_at(490, 79)[0]  # 8 lines up
    for _ in range(200):
        model.on_key("PGUP")
    assert pane.visible(9, 79)[0] == pane.lines_at(0, 79)[0]  # stops at the top
    model.on_key("PGDN")  # 8 lines down: the first message's are its day's separator and it
    assert pane.visible(9, 79)[0] == pane.lines_at(7, 79)[0]
    model.on_key("END")
    assert pane.at_bottom


def test_help_invite_settings_and_escape(store: UiStore, circle: str) -> None:
    model = started(store)
    model.on_key("F1")
    assert model.overlay == "help"
    assert "Ctrl+N / Ctrl+P" in screen_text(model)
    model.on_key("ESC")
    assert model.overlay is None
    effects = model.on_key("F2")
    assert [c.body for c in calls(effects, OP_INVITE)] == [{"circle_id": circle}]
    store.drive(model, effects)
    code = store.handle(OP_INVITE, {"circle_id": circle}).reply["code"]
    assert store.copied == [code]  # on the clipboard (OSC 52)
    # The code alone on a line of its own, never wrapped: the sidebar makes way for it.
    lines = screen_text(model, rows=24, cols=len(code) + 1).splitlines()
    assert [line.rstrip() for line in lines if code in line] == [code]
    # Narrower, it is not wrapped either (a copy of two lines is no code): a start, and why.
    lines = screen_text(model, cols=80).splitlines()
    assert code[:80] in lines and "Too narrow to show it whole" in "\n".join(lines)
    model.on_key("F2")
    assert model.overlay is None


def test_settings_form_saves_relay_url_and_name(store: UiStore, circle: str) -> None:
    model = started(store)
    typed(model, "draft")
    effects = model.on_key("F3")
    assert [c.body for c in calls(effects, OP_SETTINGS)] == [{}]
    store.drive(model, effects)
    model.on_key("DOWN")
    model.on_key("ENTER")
    assert model.settings_editing
    assert model.prompt == "relay URL> "
    effects = typed(model, "https://relay.example") + model.on_key("ENTER")
    assert [c.body for c in calls(effects, OP_SETTINGS)] == [{"relay_url": "https://relay.example"}]
    store.drive(model, effects)
    assert model.settings["relay_url"] == "https://relay.example"
    assert model.input.text == "draft"
    model.on_key("UP")
    model.on_key("ENTER")
    model.on_key("C-u")
    effects = typed(model, "Ally") + model.on_key("ENTER")
    (rename,) = calls(effects, OP_CONTROL)
    assert rename.body["event"]["display_name"] == "Ally"
    model.on_key("ESC")
    assert model.overlay is None


def test_debug_keeps_the_last_500_records(store: UiStore, circle: str) -> None:
    model = started(store)
    for i in range(600):
        model.on_sys_log({"ts": T0 + i, "service": "gossip", "level": "info", "event": "x", "n": i})
    assert len(model.debug_lines) == 500
    assert model.debug_lines[-1].endswith("x [gossip info] n=599")
    enter(model, "/debug")
    assert "n=599" in screen_text(model)


# --- the first run -------------------------------------------------------------------
def test_wizard_creates_a_circle_and_names_this_node(store: UiStore) -> None:
    model = started(store)  # no circle yet
    assert model.mode == "wizard"
    assert "Welcome to felund" in screen_text(model)
    assert enter(model, "") == []
    assert model.status_style == "error"
    assert enter(model, "friends") == []
    assert model.wizard_step == "name"
    assert model.input.text == "alice"  # the current name, to keep or change
    model.on_key("C-u")
    effects = enter(model, "Ally")
    (create,) = calls(effects, OP_CIRCLE_CREATE)
    assert create.body == {"name": "friends"}
    follow = store.answer(model, create)
    (made,) = store.db.circles()
    (rename,) = calls(follow, OP_CONTROL)
    assert rename.body["circle_id"] == made.circle_id
    assert rename.body["event"] == events.rename_event(made.circle_id, ME, "Ally")
    assert calls(follow, OP_CIRCLES)
    store.drive(model, follow)
    assert model.mode == "chat"
    assert model.active == (made.circle_id, "general")


def test_wizard_joins_by_code_and_a_bad_code_starts_over(store: UiStore) -> None:
    model = started(store)  # no circle yet
    enter(model, "felund1.bad")
    model.on_key("C-u")
    (join,) = calls(enter(model, "Ally"), OP_CIRCLE_JOIN)
    assert join.body == {"code": "felund1.bad"}
    store.drive(model, [join])
    assert model.wizard_step == "circle"
    assert model.status == "invite code is damaged (bad JSON)"


# --- nothing crashes -------------------------------------------------------------------
def test_malformed_answers_are_notices() -> None:
    model = Model(ME, clock=lambda: float(T0))
    circles, settings_, _ = calls(model.start(), "")
    model.on_reply(circles.token, {"circles": [{"circle_id": 5}]})
    assert model.status == "unexpected answer to store.circles"
    model.on_reply(settings_.token, ["nonsense"])
    assert model.on_reply(12345, {}) == []


KEY_NAMES = sorted(KEYS)
ANSWERS = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(
        st.sampled_from(["circles", "channels", "msgs", "value", "seqs", "code", "circle_id"]),
        st.one_of(
            st.integers(),
            st.text(max_size=3),
            st.lists(st.dictionaries(st.text(max_size=3), st.integers()), max_size=2),
        ),
        max_size=3,
    ),
)
ACTIONS = st.one_of(
    st.sampled_from(KEY_NAMES),
    st.text(max_size=6),
    st.sampled_from(["/channel create x", "/who", "/circles", "/name", "/join x", "/help who"]),
    st.tuples(st.just("reply"), st.integers(0, 40), ANSWERS),
    st.tuples(st.just("error"), st.integers(0, 40), st.text(max_size=8)),
    st.tuples(st.just("stored"), st.integers(1, 50), st.sampled_from(["general", "dev", "x"])),
    st.tuples(st.just("resize"), st.integers(1, 30), st.integers(1, 120)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(ACTIONS, max_size=40), st.booleans())
def test_random_keys_and_answers_never_crash(
    example_store: UiStore, actions: list[Any], loaded: bool
) -> None:
    model = started(example_store) if loaded else Model(ME, clock=lambda: float(T0))
    rows, cols = 24, 80
    for action in actions:
        if isinstance(action, str):
            if action.startswith("/"):
                enter(model, action)
            else:
                model.on_key(action)
        elif action[0] == "reply":
            model.on_reply(action[1], action[2])
        elif action[0] == "error":
            model.on_error(action[1], "timeout", action[2])
        elif action[0] == "stored":
            model.on_chat_msg_stored([made_up_row(example_store.circle_id, action[1], action[2])])
        else:
            rows, cols = action[1], action[2]
            model.on_resize(rows, cols)
        screen = render(model, rows, cols)
        assert len(screen) == rows
        assert all(sum(_width(t) for t, _ in line) == cols for line in screen)


def _width(text: str) -> int:
    from felund.ui.text import width

    return width(text)
