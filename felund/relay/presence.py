"""Presence at the relay: register a circle, find its other members' gossip addresses, leave.

``POST /v1/register`` carries the circle's signing key (pinned by the first
registration at a fresh relay); ``GET /v1/peers`` answers the others, whose
tcp endpoints go to gossip through ``store.peers.add``; ``DELETE
/v1/register`` leaves at once rather than when the registration's TTL runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

from felund import metrics, netaddr
from felund.actor.backoff import Backoff
from felund.config import GossipConfig
from felund.errors import RelayError, RPCTimeout
from felund.protocol import OP_PEERS_ADD
from felund.relay.circle import CircleSync
from felund.relay.link import RelayLink
from felund.relay.protocol import MAX_TTL_S, MIN_TTL_S, UNKNOWN_PREDECESSOR

UNREGISTER_TIMEOUT_S: Final = 2.0  # well inside the supervisor's stop grace period
PEERS_ASKED: Final = 50
MAX_PEERS_ADD: Final = 256  # store.peers.add takes at most this many


def endpoints(gossip: GossipConfig) -> list[dict[str, Any]]:
    """Where peers reach this node's gossip (the supervisor passes the real port)."""
    if not gossip.port:
        return []
    host, _, port = netaddr.invite_peer(gossip).rpartition(":")
    family = "ipv6" if host.startswith("[") else "ipv4"
    return [
        {
            "transport": "tcp",
            "host": host.strip("[]"),
            "port": int(port),
            "family": family,
            "nat": "unknown",
        }
    ]


async def register(link: RelayLink, c: CircleSync, ttl_s: int, where: list[Any]) -> None:
    """POST /v1/register, with the signing key (kept for this node: its realm's), and in a
    re-keyed circle the proof that its realm succeeds the previous epoch's.

    A relay that never saw the previous epoch's key (the circle was re-keyed before
    this node used it, or it forgot the key) cannot check the proof: the node
    registers in the old realm first, then again in the new one.
    """
    body = {
        "node_id": link.node_id,
        "circle_hint": c.hint,
        "endpoints": where,
        "capabilities": {"relay": True, "transport": ["tcp"], "client": "felund-node"},
        "ttl_s": ttl_s,
        "signing_key": c.key,
    }
    succeeds = c.succeeds
    if succeeds is not None:
        body["succeeds"] = succeeds
    try:
        await link.client.call("POST", "/register", c.key, body=body)
    except RelayError as exc:
        if exc.code != UNKNOWN_PREDECESSOR or c.previous_key is None:
            raise
        old = {**body, "signing_key": c.previous_key, "ttl_s": MIN_TTL_S}
        del old["succeeds"]
        await link.client.call("POST", "/register", c.previous_key, body=old)
        await link.client.call("POST", "/register", c.key, body=body)
    link.ok("register", c)


def peer_entries(c: CircleSync, own_node_id: str, answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The tcp addresses of a ``GET /v1/peers`` answer, as ``store.peers.add`` takes them."""
    peers = answer.get("peers")
    entries: list[dict[str, Any]] = []
    for p in peers if isinstance(peers, list) else []:
        if not isinstance(p, dict) or p.get("node_id") == own_node_id:
            continue
        seen = p.get("observed_at")
        for e in p.get("endpoints") or []:
            if not isinstance(e, dict) or e.get("transport") != "tcp":
                continue
            host, port = e.get("host"), e.get("port")
            if not isinstance(host, str) or type(port) is not int:
                continue
            entries.append(
                {
                    "circle_id": c.circle_id,
                    "addr": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                    "node_id": str(p.get("node_id", ""))[:128],
                    "last_seen": seen if type(seen) is int and seen >= 0 else 0,
                }
            )
    return entries[:MAX_PEERS_ADD]


async def lookup_peers(link: RelayLink, c: CircleSync) -> None:
    """GET /v1/peers; hand their tcp addresses to gossip."""
    answer = await link.client.call(
        "GET", "/peers", c.key, query={"circle_hint": c.hint, "limit": str(PEERS_ASKED)}
    )
    link.ok("peers", c)
    entries = peer_entries(c, link.node_id, answer)
    if entries:
        await link.store.call(OP_PEERS_ADD, {"peers": entries})


async def presence_loop(
    link: RelayLink, c: CircleSync, interval_s: float, where: list[Any]
) -> None:
    """Register and look up peers every ``interval_s``; back off on failure."""
    ttl = int(min(MAX_TTL_S, max(MIN_TTL_S, 2 * interval_s + 30)))
    backoff = Backoff()
    while True:
        op = "register"
        try:
            await register(link, c, ttl, where)
            op = "peers"
            await lookup_peers(link, c)
            backoff.reset()
            wait = interval_s
        except (RelayError, RPCTimeout) as exc:
            wait = backoff.next(link.failed(op, c, exc))
        await asyncio.sleep(wait)


async def unregister(link: RelayLink, circles: list[CircleSync]) -> None:
    """DELETE /v1/register for ``circles``: best effort, bounded by ``UNREGISTER_TIMEOUT_S``.

    A relay that does not answer in time lets the registrations expire by
    themselves, so stopping never waits long on it.
    """

    async def one(c: CircleSync) -> None:
        body = {"node_id": link.node_id, "circle_hint": c.hint}
        try:
            await link.client.call("DELETE", "/register", c.key, body=body)
            link.ok("unregister")
        except RelayError as exc:
            metrics.RELAY_REQUESTS.labels("unregister", exc.kind).inc()

    if circles:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(UNREGISTER_TIMEOUT_S), asyncio.TaskGroup() as tg:
                for c in circles:
                    tg.create_task(one(c))
