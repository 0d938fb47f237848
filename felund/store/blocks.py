"""The nodes this node blocks: kept in its own database, never sent to anyone.

Blocking is local (issue 15): a blocked node's messages are still stored and
passed on to peers (the circle's history stays whole for everyone else), but
no screen of this node shows them, and its calls are refused here.
"""

from __future__ import annotations

import json

from felund.store.database import Database

_SETTING = "blocked"  # a JSON list of node ids, sorted


def blocked(db: Database) -> list[str]:
    """The node ids blocked here, sorted."""
    raw = db.setting(_SETTING)
    value = json.loads(raw) if raw else []
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def set_blocked(db: Database, node_ids: set[str]) -> None:
    """Replace the block list."""
    db.set_setting(_SETTING, json.dumps(sorted(node_ids)))
