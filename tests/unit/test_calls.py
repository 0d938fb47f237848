"""The sans-IO call fold (felund.v1.calls): host authority, order, bounds, lifetime."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from felund.v1 import events
from felund.v1.calls import CALL_IDLE_S, MAX_PARTICIPANTS, derive_calls
from felund.v1.chatmodel import MAX_SKEW_S, ControlEvent, event_text

CID = "c1" * 32
WEB_HOST, WEB_B, WEB_C = "1a" * 16, "2b" * 16, "3c" * 16  # the other client's (unsigned)
OURS, OURS_B = "fe" + "0a" * 11, "fe" + "0b" * 11  # derived-form ids that sign
KEY = b"k" * 32
T0 = 1_800_000_000
SID = "5e" * 16


def ev(
    body: dict[str, Any], author: str, ts: int = T0, *, signed: bool | None = None, n: int = 0
) -> ControlEvent:
    """A control event as the store holds it (signed by default when the author is ours)."""
    sign = author.startswith("fe") if signed is None else signed
    text = event_text(body)
    return ControlEvent(f"{author[:8]}{ts}{n}{len(text)}", author, ts, text, KEY if sign else None)


def call(op: str, who: str, ts: int = T0, sid: str = SID, **kw: Any) -> ControlEvent:
    return ev(events.call_event(op, CID, who, sid, **kw), who, ts)


def calls_of(evs: list[ControlEvent], now: int = T0 + 60) -> dict[str, Any]:
    return {s: c.summary() for s, c in derive_calls(evs, CID, now).sessions.items()}


def test_a_web_call_runs_and_ends() -> None:
    evs = [call("create", WEB_HOST, channel="general"), call("join", WEB_B, T0 + 1)]
    got = calls_of(evs)[SID]
    assert got["host"] == WEB_HOST and got["participants"] == sorted([WEB_HOST, WEB_B])
    assert got["state"] == "active" and got["channel_id"] == "general"
    evs.append(call("view", WEB_C, T0 + 2))
    assert calls_of(evs)[SID]["viewers"] == [WEB_C]
    evs.append(call("revoke", WEB_HOST, T0 + 3, target=WEB_C))
    assert calls_of(evs)[SID]["viewers"] == []
    evs.append(call("end", WEB_HOST, T0 + 4))
    assert calls_of(evs) == {}


def test_a_forged_end_from_a_non_host_changes_nothing() -> None:
    base = [call("create", OURS), call("join", WEB_B, T0 + 1)]
    before = calls_of(base)
    assert before  # the path is live: the call is there
    forged_end = {"t": "CALL_EVT", "op": "end", "session_id": SID, "host_node_id": OURS}
    forgeries = [
        ev({**forged_end, "actor_node_id": WEB_B}, WEB_B, T0 + 2),  # the web would take it
        ev({**forged_end, "host_node_id": ""}, WEB_B, T0 + 2),  # the web would take it
        ev(forged_end, WEB_B, T0 + 2),  # no actor: both v1 checks pass it
        ev(forged_end, OURS, T0 + 2, signed=False),  # in the host's name, unsigned
        ev(events.call_event("revoke", CID, WEB_B, SID, target=WEB_B), WEB_B, T0 + 2),
        ev(events.call_event("end", CID, OURS_B, SID), OURS_B, T0 + 2),  # signed, not host
    ]
    for forged in forgeries:
        got = derive_calls([*base, forged], CID, T0 + 60)
        assert calls_of([*base, forged]) == before, forged.text
        assert got.refused[forged.msg_id] in ("actor_mismatch", "not_host", "unsigned_from_signer")
    assert calls_of([*base, call("end", OURS, T0 + 3)]) == {}  # the signed host ends it


def test_a_derived_form_id_that_never_signs_follows_the_other_client_s_rules() -> None:
    # The host is ours only if it signs: a derived-form create that is unsigned
    # is the other client's rules (a v1 id may carry the mark by chance).
    evs = [ev(events.call_event("create", CID, OURS, SID), OURS, signed=False)]
    assert SID in calls_of(evs)
    assert (
        calls_of([*evs, ev(events.call_event("end", CID, OURS, SID), OURS, T0 + 1, signed=False)])
        == {}
    )


def test_a_blocked_node_s_calls_are_refused_here() -> None:
    """Blocking is local (issue 15): the blocked node's call is not shown, nor is it in
    others' calls; the same events without the block are the call as before."""
    theirs = [call("create", WEB_HOST), call("join", WEB_B, T0 + 1)]
    mine = [call("create", WEB_B, sid="77" * 16), call("join", WEB_HOST, T0 + 1, sid="77" * 16)]
    evs = [*theirs, *mine]
    assert set(calls_of(evs)) == {SID, "77" * 16}  # the path is live: both calls are there
    got = derive_calls(evs, CID, T0 + 60, blocked={WEB_HOST})
    assert list(got.sessions) == ["77" * 16] and got.sessions["77" * 16].participants == (WEB_B,)
    assert got.rejected == {"blocked": 2, "no_session": 1}  # its create and join; b's join
    assert got.refused[theirs[0].msg_id] == "blocked"
    # A signed host of ours is refused alike: signatures say who, a block says not here.
    assert derive_calls([call("create", OURS)], CID, T0, blocked={OURS}).rejected == {"blocked": 1}


def test_events_before_their_create_wait_for_it() -> None:
    evs = [call("join", WEB_B, T0 - 5), call("create", WEB_HOST)]
    assert calls_of(evs)[SID]["participants"] == sorted([WEB_HOST, WEB_B])
    assert derive_calls([call("join", WEB_B)], CID, T0).refused  # no create: nothing


def test_one_create_per_session_the_first_in_order() -> None:
    evs = [call("create", WEB_B, T0 + 1, channel="dev"), call("create", WEB_HOST, channel="ops")]
    got = derive_calls(evs, CID, T0 + 60)
    assert got.sessions[SID].host == WEB_HOST and got.rejected["exists"] == 1


def test_others_speak_only_for_themselves() -> None:
    create = call("create", WEB_HOST)
    joins_for_other = ev(events.call_event("join", CID, WEB_C, SID), WEB_B, T0 + 1)
    hosts_for_other = ev(events.call_event("create", CID, WEB_C, "77" * 16), WEB_B)
    got = derive_calls([create, joins_for_other, hosts_for_other], CID, T0 + 60)
    assert list(got.sessions) == [SID] and got.sessions[SID].participants == (WEB_HOST,)
    assert got.rejected["actor_mismatch"] == 2


def test_bounds_and_bad_fields() -> None:
    people = [f"{n:032x}" for n in range(1, MAX_PARTICIPANTS + 5)]
    evs = [call("create", people[0])] + [call("join", p, T0 + 1) for p in people[1:]]
    got = derive_calls(evs, CID, T0 + 60)
    assert len(got.sessions[SID].participants) == MAX_PARTICIPANTS and got.rejected["full"] == 4
    bad = [
        ev({"t": "CALL_EVT", "op": "create", "session_id": "x" * 65}, WEB_B),
        ev({"t": "CALL_EVT", "op": "create", "session_id": "  "}, WEB_B),
        ev({"t": "CALL_EVT", "op": "dance", "session_id": SID}, WEB_B),
        ev({"t": "CALL_EVT", "op": "create", "session_id": SID, "channel_id": 3}, WEB_B),
        ev({"t": "CALL_EVT", "op": "create", "session_id": SID, "circle_id": "dd" * 32}, WEB_B),
        ev({"t": "CALL_EVT", "op": "create", "session_id": SID, "pad": "x" * 5000}, WEB_B),
    ]
    got = derive_calls(bad, CID, T0 + 60)
    assert not got.sessions and len(got.refused) == len(bad)
    inert = ev({"t": "CALL_EVT", "op": "invite", "session_id": SID}, WEB_B)
    assert not derive_calls([inert], CID, T0).refused


def test_a_call_nobody_ends_is_over_when_idle_and_future_events_wait() -> None:
    evs = [call("create", WEB_HOST)]
    assert calls_of(evs, T0 + CALL_IDLE_S - 1) and calls_of(evs, T0 + CALL_IDLE_S) == {}
    assert derive_calls(evs, CID, T0).due_at == T0 + CALL_IDLE_S
    ahead = [call("create", WEB_HOST, T0 + MAX_SKEW_S + 100)]
    got = derive_calls(ahead, CID, T0)
    assert not got.sessions and got.due_at == T0 + 100


def test_one_call_per_channel_the_first_created() -> None:
    evs = [call("create", WEB_B, T0 + 1, sid="77" * 16), call("create", WEB_HOST)]
    got = derive_calls(evs, CID, T0 + 60)
    assert len(got.sessions) == 2 and got.by_channel()["general"].host == WEB_HOST


def test_builder_writes_the_web_key_order() -> None:
    e = events.call_event("create", CID, WEB_HOST, SID, channel="dev")
    assert list(e) == [
        "t",
        "op",
        "session_id",
        "host_node_id",
        "circle_id",
        "channel_id",
        "actor_node_id",
    ]
    assert list(events.call_event("leave", CID, WEB_B, SID))[-2:] == ["reason", "actor_node_id"]
    assert len(events.call_event("create", CID, WEB_B)["session_id"]) == 32
    with pytest.raises(ValueError):
        events.call_event("end", CID, WEB_B, "")
    with pytest.raises(ValueError):
        events.call_event("revoke", CID, WEB_B, SID, target="nobody")


_PEOPLE = [WEB_HOST, WEB_B, WEB_C, OURS, OURS_B]
_SIDS = [SID, "77" * 16]


@st.composite
def _event_sets(draw: st.DrawFn) -> list[ControlEvent]:
    out = []
    for n in range(draw(st.integers(1, 14))):
        op = draw(st.sampled_from(["create", "join", "view", "leave", "end", "revoke"]))
        who = draw(st.sampled_from(_PEOPLE))
        body = events.call_event(
            op, CID, who, draw(st.sampled_from(_SIDS)), target=draw(st.sampled_from(_PEOPLE))
        )
        if draw(st.booleans()):
            body["actor_node_id"] = draw(st.sampled_from(_PEOPLE))  # maybe a forgery
        signed = who.startswith("fe") and draw(st.integers(0, 4)) > 0
        out.append(ev(body, who, T0 + draw(st.integers(0, 3)), signed=signed, n=n))
    return out


@settings(max_examples=300, deadline=None)
@given(_event_sets(), st.randoms(use_true_random=False))
def test_the_calls_do_not_depend_on_the_order_events_arrive_in(
    evs: list[ControlEvent], rnd: random.Random
) -> None:
    first = derive_calls(evs, CID, T0 + 60)
    shuffled = list(evs)
    rnd.shuffle(shuffled)
    again = derive_calls(shuffled, CID, T0 + 60)
    assert json.dumps({s: c.summary() for s, c in first.sessions.items()}) == json.dumps(
        {s: c.summary() for s, c in again.sessions.items()}
    )
    assert first.refused == again.refused and first.rejected == again.rejected
