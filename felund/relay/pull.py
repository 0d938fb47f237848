"""Pull: a circle's messages from the relay into the store, from the feed's frames or by GET.

- A feed frame's messages go to the store as they came (origin "relay": the
  store checks each one fully and drops duplicates); once it acknowledged
  them, the frame's cursor span moves the pull cursor (``PullCursor``).
- ``GET /v1/messages?cursor=`` from the held cursor, page after page, only
  when something may be missing: at start and whenever the feed
  (re)connects, when a span shows a gap, for a frame without a span (a relay
  that does not send them), after a failure, and while the feed is down.
- The durable cursor is saved once the store acknowledged all it covers.
"""

from __future__ import annotations

import time
from typing import Any

from felund import metrics
from felund.errors import InvalidMessage, RelayError
from felund.protocol import MAX_POST_BATCH, OP_APPEND
from felund.relay.circle import CircleSync, FeedMessages
from felund.relay.link import RelayLink
from felund.relay.protocol import DEFAULT_PAGE
from felund.v1.wire import check_shape


async def pull(link: RelayLink, c: CircleSync) -> None:
    """Store what the feed brought; GET what may be missing; save the cursor reached."""
    try:
        while (frame := c.take()) is not None:
            await apply_frame(link, c, frame)
        if c.want_get or c.pull.gap or not c.health.feed:
            c.want_get = False
            await fetch(link, c)
        await save(link, c)
    except BaseException:
        c.want_get = True  # what was not stored is fetched again, from the held cursor
        raise


async def apply_frame(link: RelayLink, c: CircleSync, frame: FeedMessages) -> None:
    """Store a feed frame's messages; then its span is held (without one, a GET must say)."""
    await store(link, c, frame.messages)
    if frame.span is None:
        c.want_get = True
    else:
        c.pull.hold(*frame.span)


async def fetch(link: RelayLink, c: CircleSync) -> None:
    """GET pages from the held cursor until the relay has no more."""
    while True:
        asked = c.pull.held
        answer = await link.client.call(
            "GET",
            "/messages",
            c.key,
            query={"circle_hint": c.hint, "cursor": str(asked), "limit": str(DEFAULT_PAGE)},
        )
        msgs, nxt = answer.get("messages"), answer.get("next_cursor")
        if not isinstance(msgs, list) or type(nxt) is not int or nxt < 0:
            raise RelayError("bad_answer", "messages or next_cursor missing")
        link.ok("pull", c)
        if answer.get("expired") is True:
            # The relay purged messages after our cursor (retention): gossip may still
            # hold them, the relay no longer does; say so rather than pass over the gap.
            link.warn("relay.history_expired", circle_id=c.circle_id, cursor=asked)
            c.health.history_expired(time.time())
        await store(link, c, msgs)
        c.pull.hold(asked, nxt)
        await save(link, c)
        if len(msgs) < DEFAULT_PAGE or nxt <= asked:
            return


async def save(link: RelayLink, c: CircleSync) -> None:
    """Make the held cursor durable, if it moved."""
    value = c.pull.to_save()
    if value is not None:
        c.pull.saved_at(await link.cursor("pull", c, value))


async def store(link: RelayLink, c: CircleSync, msgs: list[Any]) -> None:
    """Hand the circle's messages to the store; count and log those refused."""
    mine, rejected = shaped(c.circle_id, msgs)
    stored = 0
    for i in range(0, len(mine), MAX_POST_BATCH):
        result = await link.appender.call(
            OP_APPEND, {"origin": "relay", "msgs": mine[i : i + MAX_POST_BATCH]}
        )
        stored += sum(1 for r in result["results"] if r == "stored")
        rejected += [
            r.removeprefix("rejected:") for r in result["results"] if r.startswith("rejected:")
        ]
    if stored:
        link.pulled += stored
        c.health.exchanged(time.time())
    for kind in rejected:
        metrics.BAD_INPUT.labels("relay", kind).inc()
    if rejected:
        link.warn(
            "relay.pull_rejected",
            relay=link.host,
            circle_hint=c.hint,
            count=len(rejected),
            reasons=sorted(set(rejected)),
        )


def shaped(circle_id: str, msgs: list[Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The messages of the circle fit to hand to the store, and the kinds of those refused.

    The store checks each one fully; this first look keeps out what could
    not even cross the bus (a lone surrogate from a JSON escape would stop
    this process at every pull, on the same page, for ever).
    """
    mine: list[dict[str, Any]] = []
    refused: list[str] = []
    for m in msgs:
        try:
            _, circle, _ = check_shape(m)
        except InvalidMessage as exc:
            refused.append(exc.kind)
            continue
        if circle == circle_id:
            mine.append(m)
    return mine, refused
