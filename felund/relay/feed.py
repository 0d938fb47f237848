"""The relay's WebSocket feed of a circle (``/v1/relay/ws``), kept open; its frames, read.

Every MESSAGES frame is queued for the pull loop, which stores its messages
as they came: no GET for what the feed already handed over. A (re)connect
asks for one GET (what was stored while the feed was down). The relay PINGs
every 15 s; a feed silent for ``FEED_IDLE_S`` is gone, and is opened again
with backoff.
"""

from __future__ import annotations

import asyncio
import json
from typing import Final

import aiohttp

from felund.actor.backoff import Backoff
from felund.errors import RelayError
from felund.relay.circle import CircleSync, FeedMessages
from felund.relay.client import signed_headers
from felund.relay.link import FEED, RelayLink

FEED_IDLE_S: Final = 75.0  # the relay PINGs every 15 s: this long silent means it is gone
FEED_MAX_FRAME: Final = 16 * 1024 * 1024
PING: Final = "PING"
_CLOSED: Final = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.ERROR,
)


def parse_frame(text: str) -> FeedMessages | str | None:
    """A feed frame: its messages (``FeedMessages``), ``PING``, or None for anything else.

    The span is kept only when well-formed (``0 <= after < cursor``): a frame
    without one is still stored, and a GET then moves the cursor.
    """
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(frame, dict):
        return None
    if frame.get("t") == PING:
        return PING
    messages = frame.get("messages")
    if frame.get("t") != "MESSAGES" or not isinstance(messages, list):
        return None
    after, cursor = frame.get("after"), frame.get("cursor")
    span = None
    if type(after) is int and type(cursor) is int and 0 <= after < cursor:
        span = (after, cursor)
    return FeedMessages(messages, span, len(text))


async def feed_loop(link: RelayLink, c: CircleSync) -> None:
    """Keep the feed open; queue every frame of messages for the pull loop."""
    backoff = Backoff(initial=2.0)
    while True:
        try:
            await _feed_once(link, c, backoff)
            exc: Exception = RelayError("unavailable", "the feed closed")
        except RelayError as err:
            exc = err
        except (aiohttp.ClientError, OSError) as err:
            exc = RelayError("unreachable", type(err).__name__)
        except TimeoutError:
            exc = RelayError("timeout", f"silent for {FEED_IDLE_S:g} s")
        finally:
            c.health.feed = False
            c.pull_now.set()  # poll while the feed is down
        await asyncio.sleep(backoff.next(link.failed(FEED, c, exc)))


async def _feed_once(link: RelayLink, c: CircleSync, backoff: Backoff) -> None:
    headers = signed_headers(c.key, link.node_id, "GET", "/relay/ws", b"")
    async with link.client.session.ws_connect(
        link.client.feed_url(),
        params={"circle_hint": c.hint, "node_id": link.node_id},
        headers=headers,
        heartbeat=None,
        autoping=True,
        max_msg_size=FEED_MAX_FRAME,
        timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
    ) as ws:
        link.ok(FEED, c)
        c.health.feed = True
        c.want_get = True  # what was stored while the feed was down
        c.pull_now.set()
        backoff.reset()
        while True:
            msg = await ws.receive(timeout=FEED_IDLE_S)
            if msg.type in _CLOSED:
                return
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = parse_frame(msg.data)
            if frame == PING:
                await ws.send_str('{"t":"PONG"}')
            elif isinstance(frame, FeedMessages):
                c.offer(frame)
