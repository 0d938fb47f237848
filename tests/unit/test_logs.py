"""The node's log records: bounded, and publishing them never fails the caller."""

from __future__ import annotations

import io
import json
from typing import Any

from felund import logs
from felund.protocol import TOPIC_LOG


def test_log_records_are_bounded_and_publishing_never_fails_the_caller() -> None:
    sent: list[tuple[str, Any]] = []

    def publish(topic: str, body: Any) -> None:
        sent.append((topic, body))
        logs.get().info("recursion")  # a publisher that logs must not loop
        raise OSError("the bus is gone")  # nor fail the log call

    stream = io.StringIO()
    log = logs.setup("test", "n" * 24, "info", "json", stream)
    try:
        log.debug("below.the.level")
        logs.publish_to(publish)
        log.warning(
            "something",
            text="x" * 5000,
            inf=float("inf"),
            big=2**70,
            obj=object(),
            items=list(range(3)),
            **{f"k{i}": i for i in range(50)},
        )
    finally:
        logs.publish_to(None)
    # The first record went out; the recursion is cut; stderr got both.
    assert [topic for topic, _ in sent] == [TOPIC_LOG]
    body = sent[0][1]
    assert body["service"] == "test" and body["level"] == "warning"
    assert body["event"] == "something" and body["node_id"] == "n" * 24
    assert len(body["text"]) == logs.MAX_LOG_VALUE
    assert body["inf"] == "inf" and body["big"] == str(2**70)
    assert body["items"] == "[0, 1, 2]" and body["obj"].startswith("<object")
    assert body["truncated"] is True and len(body) == 4 + logs.MAX_LOG_FIELDS + 1
    assert json.loads(json.dumps(body)) == body
    lines = [json.loads(x)["event"] for x in stream.getvalue().splitlines()]
    assert lines == ["recursion", "something"]
