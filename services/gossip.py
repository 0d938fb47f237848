"""The gossip actor: TCP sessions with the other members of this node's circles.

- Owns: live TCP connections, and nothing durable; the listening socket is
  the supervisor's (inherited as ``FELUND_INHERITED_GOSSIP_FD``), so a restart drops
  no connection attempt queued in the kernel.
- Subscribes: ``chat.msg.stored`` and store heartbeats (its index, caught up
  by ``felund.bus.catchup.AsyncCatchUp``; fresh messages pushed to native
  peers at once), ``chat.circle.changed`` (circles and secrets reloaded).
- Calls the store: ``store.circle.keys``, ``store.snapshot``, ``store.fetch``
  (messages to send), ``store.append`` (messages received: only an
  acknowledged append counts as received), ``store.peers`` (paged),
  ``store.peers.add`` (learned, bounded; or reached), ``store.peers.forget``.
- Publishes: heartbeats with ``sessions`` (open native sessions),
  ``last_seq`` (the index's) and ``peers`` (the other nodes in touch now:
  an open native session, or a v1 round that ended well within the last
  two round intervals; also the ``felund_gossip_peers`` gauge) and
  ``connectivity``: per circle_id, ``peers`` in touch now and
  ``last_message_ts`` (Unix time a message last went to or came from a
  peer), relay-sync's map of gossip's facts, shown by ``felund status``
  and the ui.
- Serves: the gossip port (v1 JSON lines and the native protocol), capped
  per address and in all. Dials known peers every ``gossip.round_interval_s``
  (and at once after a local post), bounded in flight, per round and per
  address (``felund.gossip.dialer``).
- Restart: holds nothing the store does not; rebuilds its index from it.

The logic lives in ``felund.gossip`` (``node.GossipNode`` and what it
composes); this module only wires it to the process.
"""

from __future__ import annotations

from felund import lazy

if __name__ == "__main__":  # run as the process, not imported by a test
    lazy.unavailable(*lazy.NODE_PROCESSES_WITHOUT)

import asyncio
import os
import socket

from felund.actor.runtime import Runtime
from felund.gossip.node import GossipNode
from felund.protocol import GOSSIP_FD_ENV, SVC_GOSSIP


def _listener(rt: Runtime) -> socket.socket:
    fd = os.environ.get(GOSSIP_FD_ENV)
    if fd is not None:
        return socket.socket(fileno=int(fd))
    cfg = rt.ctx.config.gossip
    # Run on its own (not under the supervisor): bind the port ourselves.
    return socket.create_server((cfg.bind, cfg.port))


def main() -> None:
    """Entry point: ``python -m services.gossip``."""
    rt = Runtime(SVC_GOSSIP)
    listener = _listener(rt)
    listener.setblocking(False)
    try:
        asyncio.run(GossipNode(rt).serve(listener))
    finally:
        rt.close()


if __name__ == "__main__":
    main()
