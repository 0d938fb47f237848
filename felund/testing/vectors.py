"""v1 test data: the interop vectors carried in tests/vectors, and messages as a node sends them."""

from __future__ import annotations

import json
import time
from typing import Any

from felund.testing.processes import REPO
from felund.trust.identity import IdentityKey
from felund.v1 import ids
from felund.v1.wire import Draft, compose_message, compose_messages, to_wire

VECTORS = REPO / "tests" / "vectors" / "felund-v1.json"  # copied from shared/, see its README
TRUST_VECTORS = REPO / "tests" / "vectors" / "felund-trust-v1.json"  # ours, see its README
EPOCH_VECTORS = REPO / "tests" / "vectors" / "felund-epoch-v1.json"  # ours, see its README


def vector_cases() -> dict[str, list[Any]]:
    """The cases of the v1 interop vectors (the repository's copy, tests/vectors), by group."""
    text = VECTORS.read_text(encoding="utf-8")
    cases: dict[str, list[Any]] = json.loads(text)["cases"]
    return cases


def trust_cases() -> dict[str, list[Any]]:
    """The signing, identity and owner vectors of felund.trust, by group."""
    cases: dict[str, list[Any]] = json.loads(TRUST_VECTORS.read_text(encoding="utf-8"))
    return cases


def epoch_cases() -> dict[str, Any]:
    """The X25519, wrap and epoch key id vectors of felund.trust.wrap, by group."""
    cases: dict[str, Any] = json.loads(EPOCH_VECTORS.read_text(encoding="utf-8"))
    return cases


def wire_message(
    secret: str,
    author: str,
    text: str,
    *,
    name: str = "tester",
    channel: str = "general",
    ts: int | None = None,
    encrypt: bool = True,
    key: IdentityKey | None = None,
) -> dict[str, Any]:
    """A message of the circle of ``secret`` as our node sends it (every v1 key), dated now;
    signed by ``key`` if given (whoever's it is: a forger's too), else as v1 writes it."""
    ts = int(time.time()) if ts is None else ts
    msg = compose_message(
        secret,
        circle_id=ids.circle_id(secret),
        channel_id=channel,
        author_node_id=author,
        display_name=name,
        text=text,
        created_ts=ts,
        msg_id=ids.new_msg_id(author, ts),
        encrypt=encrypt,
        key=key,
    )
    return to_wire(msg)


def wire_messages(
    secret: str, author: str, texts: list[str], *, key: IdentityKey, name: str = "tester"
) -> list[dict[str, Any]]:
    """Messages of the circle of ``secret`` written together, as our node writes a post
    of many: signed by ``key`` in batches (signing.sign_many), dated now."""
    ts = int(time.time())
    drafts = [
        Draft(
            msg_id=ids.new_msg_id(author, ts),
            circle_id=ids.circle_id(secret),
            channel_id="general",
            author_node_id=author,
            created_ts=ts,
            display_name=name,
            text=text,
        )
        for text in texts
    ]
    return [to_wire(m) for m in compose_messages(secret, drafts, encrypt=True, key=key)]
