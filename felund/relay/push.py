"""Push: a circle's messages that did not come from the relay, posted to it in order.

The store is read for the one circle (``store.snapshot`` with ``circle_id``,
by its index), so the cost follows the circle's new messages, not the
node's whole history. The durable push cursor (a store_seq) moves only once
the relay answered ok, so a crash sends again what may not have arrived (the
relay drops duplicates by msg_id). A message the relay refuses for itself
is counted and skipped: it would be refused again. Each answer's cursor span
tells the pull cursor that these messages are held here already.
"""

from __future__ import annotations

import time
from typing import Any, Final

from felund import metrics
from felund.errors import RelayError
from felund.protocol import OP_SNAPSHOT
from felund.relay.circle import CircleSync
from felund.relay.link import RelayLink
from felund.relay.protocol import (
    BATCH_TOO_LARGE,
    CIRCLE_MISMATCH,
    INVALID_MESSAGE,
    MAX_BATCH,
    PAYLOAD_TOO_LARGE,
)

PUSH_PAGE: Final = 500  # store rows (with wire) read at a time
# Refusals of a message itself: sending it again would be refused again.
REFUSED_MESSAGE: Final = frozenset(
    {INVALID_MESSAGE, CIRCLE_MISMATCH, PAYLOAD_TOO_LARGE, BATCH_TOO_LARGE}
)


async def push(link: RelayLink, c: CircleSync) -> None:
    """Post the circle's messages after the push cursor, which moves as the relay takes them."""
    while True:
        answer = await link.store.call(
            OP_SNAPSHOT,
            {
                "since": c.push_cursor,
                "limit": PUSH_PAGE,
                "with_wire": True,
                "circle_id": c.circle_id,
                "exclude_origin": "relay",
            },
        )
        rows = answer["msgs"]
        for i in range(0, len(rows), MAX_BATCH):
            chunk = rows[i : i + MAX_BATCH]
            try:
                await post(link, c, chunk)
            except RelayError as exc:
                if exc.code not in REFUSED_MESSAGE:
                    raise
                await _post_one_by_one(link, c, chunk)
            c.push_cursor = await link.cursor("push", c, chunk[-1]["store_seq"])
        covers = int(answer["covers"])
        if covers > c.push_cursor:
            c.push_cursor = await link.cursor("push", c, covers)
        if not answer["more"]:
            return


async def _post_one_by_one(link: RelayLink, c: CircleSync, rows: list[dict[str, Any]]) -> None:
    """One message the relay will never take must not stop the rest."""
    for row in rows:
        try:
            await post(link, c, [row])
        except RelayError as exc:
            if exc.code not in REFUSED_MESSAGE:
                raise
            metrics.RELAY_REQUESTS.labels("push", "refused").inc()
            link.warn(
                "relay.push_refused",
                exc.code,
                relay=link.host,
                circle_hint=c.hint,
                msg_id=row["msg_id"][:64],
            )


async def post(link: RelayLink, c: CircleSync, rows: list[dict[str, Any]]) -> None:
    """POST /v1/messages, signed as this node (the feed does not echo them back to it)."""
    answer = await link.client.call(
        "POST",
        "/messages",
        c.key,
        body={"circle_hint": c.hint, "messages": [r["wire"] for r in rows]},
    )
    link.ok("push", c)
    link.pushed += len(rows)
    c.health.exchanged(time.time())
    after, cursor = answer.get("after"), answer.get("cursor")
    if type(after) is int and type(cursor) is int and 0 <= after < cursor:
        c.pull.hold(after, cursor)  # our own: held, and the feed will not send them
        c.pull_now.set()  # to save the pull cursor
