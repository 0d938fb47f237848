"""One end of the bus benchmark, in a process of its own.

``python -m bench.bus_peer pub N RATE`` publishes N events (RATE per second,
0 for as fast as possible); ``python -m bench.bus_peer sub N`` receives
until it has seen N events (received or known lost) or goes quiet, then
prints one JSON line of counts.
"""

from __future__ import annotations

import json
import sys
import time

from felund.actor.runtime import load_context
from felund.bus.sockets import Bus
from felund.protocol import SVC_BENCH, TOPIC_HEARTBEAT

TOPIC = "bench.event"
QUIET_S = 3.0


def publish(bus: Bus, count: int, rate: float) -> dict[str, float]:
    """Send ``count`` events, paced to ``rate`` per second if rate > 0."""
    pub = bus.publisher()
    time.sleep(1.0)  # let the subscription reach this publisher (slow joiner)
    payload = {"text": "x" * 100}
    started = time.perf_counter()
    for i in range(count):
        if rate and i % 100 == 0:
            ahead = started + i / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        pub.publish(TOPIC, payload)
    elapsed = time.perf_counter() - started
    for _ in range(4):  # as a service heartbeats: shows losses at the stream's end
        pub.heartbeat({"service": SVC_BENCH})
        time.sleep(0.5)
    return {"sent": count, "seconds": elapsed}


def subscribe(bus: Bus, count: int) -> dict[str, float]:
    """Count events received and events known lost (gaps, and heartbeats' seqs)."""
    sub = bus.subscriber(TOPIC, TOPIC_HEARTBEAT)
    print(json.dumps({"ready": True}), flush=True)
    received = head_lost = 0
    first = last = 0.0
    while received + head_lost + sub.lost < count:
        got = sub.recv(int(QUIET_S * 1000))
        if got is None:
            break
        if got.frame.topic != TOPIC:
            continue
        now = time.perf_counter()
        if not received:
            first = now
            head_lost = got.frame.header.seq - 1  # lost before the first one seen
        received += 1
        last = now
    return {"received": received, "missed": head_lost + sub.lost, "seconds": last - first}


def main() -> None:
    """Entry point."""
    role, count = sys.argv[1], int(sys.argv[2])
    ctx = load_context()
    bus = Bus(ctx.layout, SVC_BENCH, ctx.config.bus)
    try:
        result = publish(bus, count, float(sys.argv[3])) if role == "pub" else subscribe(bus, count)
    finally:
        bus.close(linger_ms=5000)  # what is still queued must reach the subscriber
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
