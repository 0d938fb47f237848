"""A member of a circle speaking the native protocol by hand, as the hostile tests need one."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from felund.epochs import root_only
from felund.gossip.link import connect

CLOSE_S = 60.0  # the node ends the session at our BYE, once it has handled what came before


async def send_frames(
    port: int, secret: str, circle_id: str, node_id: str, frames: list[dict[str, Any]]
) -> None:
    """Open a native session to the node on 127.0.0.1:``port``, send ``frames`` in order and
    a BYE, and read what the node sends until it closes (so that nothing we sent is cut
    short by a reset)."""
    link = await connect(
        "127.0.0.1",
        port,
        keys=root_only(circle_id, secret),
        node_id=node_id,
        listen_addr="",
        offer_native=True,
    )
    channel = link.agreed.channel
    assert channel is not None, "the node did not take the native offer"
    try:
        for frame in frames:
            await link.write(channel.seal(frame))
        await link.write(channel.seal({"t": "BYE"}))
        deadline = time.monotonic() + CLOSE_S
        with contextlib.suppress(ConnectionError):  # closed with a reset: as good
            while await link.read(deadline - time.monotonic()):
                pass
    finally:
        link.close()
