"""The store's operations in-process, as the store process runs each request."""

from __future__ import annotations

from typing import Any

from felund.store.ops import Ops, Outcome


def handled(ops: Ops, op: str, body: dict[str, Any]) -> Outcome:
    """``op`` handled in a transaction of its own (committed unless it raised)."""
    with ops.db.transaction():
        return ops.handle(op, body)
