"""The relay-sync actor: this node's circles at a relay (``relay.url``), over HTTP.

- Runs while the node has a relay URL: the runtime setting (``felund relay
  url``, ``store.settings``, or adopted from a relay invite code), else the
  configured ``relay.url`` (``FELUND_API_BASE`` also sets it). The supervisor
  starts it with that URL, restarts it when the URL changes and stops it when
  the URL is cleared.
- Subscribes: ``chat.msg.stored`` (wakes the circle's push),
  ``chat.circle.changed`` (reloads ``store.circle.keys``: loops for new
  circles, a ``DELETE /v1/register`` and no loops for circles left).
- Calls the store: ``store.circle.keys``, ``store.snapshot`` for one circle
  (what to push), ``store.append`` (origin "relay"), ``store.cursor``,
  ``store.peers.add``.
- Per circle, signed with its relay signing key: presence (register, peers
  to gossip), push, pull from the WebSocket feed's own frames (a GET only at
  (re)connect, on a gap in the feed's cursor span, and while the feed is
  down), as ``felund.relay.sync`` and its modules describe.
- Publishes: its heartbeat (``sys.svc.heartbeat``) with ``circles``,
  ``feeds``, ``pushed``, ``pulled`` and ``connectivity``: per circle_id
  ``reachable``, ``last_ok_ts``, ``last_error``, ``error_since``,
  ``last_message_ts`` (Unix seconds or null) and ``feed``.
- Owns nothing durable: its push and pull cursors live in the store
  (``store.cursor``, per relay URL and circle) and move only once the relay
  said ok or the store acknowledged. Relay failures back off with jitter
  (cap 60 s), counted in ``felund_relay_requests_total{op,outcome}``, logged
  at most once per kind every 10 s (the relay's host, never keys or
  signatures).
- Restart: crash-only; a loop that fails (not a relay or store outage) ends
  the process and the supervisor restarts it. A clean stop (SIGTERM)
  unregisters every circle, bounded by 2 s; after a crash the registrations
  expire by their TTL.
"""

from __future__ import annotations

import asyncio

from felund.actor.runtime import Runtime
from felund.protocol import SVC_RELAY_SYNC
from felund.relay.sync import RelaySync


def main() -> None:
    """Entry point: ``python -m services.relay_sync``."""
    rt = Runtime(SVC_RELAY_SYNC)
    try:
        if not rt.ctx.config.relay.url:
            rt.log.error("relay_sync.no_url", detail="relay.url is not configured")
            raise SystemExit(2)
        asyncio.run(RelaySync(rt).run())
    finally:
        rt.close()


if __name__ == "__main__":
    main()
