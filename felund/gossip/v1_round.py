"""One v1 gossip round over an authenticated link, either side.

The spec's order, the same for both sides: send PEERS and MSGS_HAVE, read
the other's two, send MSGS_REQ, read it, send MSGS_SEND, read it. Every
frame fits the v1 peer's 16 KB line: ids and messages newest first, so the
rest follows in later rounds.
"""

from __future__ import annotations

from felund import metrics
from felund.gossip import v1_frames as v1proto
from felund.gossip.handshake import Link
from felund.gossip.host import GossipHost
from felund.gossip.reconcile import MAX_BOUND, MIN_BOUND

MAX_IDS = 2000  # more cannot fit a 16 KB line; a longer list is not v1


async def v1_round(link: Link, host: GossipHost) -> int:
    """Run one round; the number of messages newly stored."""
    circle_id, key = link.circle_id, link.v1_key
    index = host.index[link.circle_id]
    newest_first = index.ids(MIN_BOUND, MAX_BOUND)[::-1]
    peers = await host.known_peers(circle_id)
    await link.write_line(v1proto.peers_frame(circle_id, peers))
    have = v1proto.fit_ids("MSGS_HAVE", circle_id, newest_first, key)
    await link.write_line({"t": "MSGS_HAVE", "circle_id": circle_id, "msg_ids": have})

    their_peers = v1proto.expect(await link.read_line(), "PEERS")
    await host.learn_peers(circle_id, v1proto.peer_list(their_peers))
    their_have = v1proto.id_list(
        v1proto.expect(await link.read_line(), "MSGS_HAVE"), "msg_ids", MAX_IDS
    )

    lacking = [i for i in their_have if i not in index]
    want = v1proto.fit_ids("MSGS_REQ", circle_id, lacking, key)
    await link.write_line({"t": "MSGS_REQ", "circle_id": circle_id, "msg_ids": want})
    asked = v1proto.id_list(v1proto.expect(await link.read_line(), "MSGS_REQ"), "msg_ids", MAX_IDS)

    held = await host.fetch([i for i in asked if i in index][:MAX_IDS])
    held.sort(key=lambda m: (m["created_ts"], m["msg_id"]), reverse=True)
    sending = v1proto.fit_messages(circle_id, held, key)
    await link.write_line({"t": "MSGS_SEND", "circle_id": circle_id, "messages": sending})
    metrics.GOSSIP_MESSAGES.labels("out").inc(len(sending))
    sent = v1proto.expect(await link.read_line(), "MSGS_SEND", messages=list)
    return await host.receive(link, sent["messages"])
