"""Test harnesses of felund, every name importable from here.

``nodes`` (real nodes: the CLI to drive them, their bus to read and wait),
``relay`` (a real relay server), ``tmux`` (the curses ui on a screen),
``browser`` (chromium), ``vectors`` (v1 data), ``signed`` (a forger's signed messages,
what enc holds), ``wait`` (the one wait), ``processes`` (what the process
harnesses share).
"""

from __future__ import annotations

from felund.testing.browser import CHROMIUM, CHROMIUM_ARGS, browser, browser_missing
from felund.testing.nodes import (
    DB_FILES,
    Node,
    break_store,
    mend_store,
    metric_total,
    metric_value,
    running_node,
)
from felund.testing.processes import FELUND, REPO, free_port
from felund.testing.relay import PY_NODE, Relay, signed_call
from felund.testing.signed import control_wire, plaintext_of, signed_wire_message
from felund.testing.store import handled
from felund.testing.tmux import Tmux
from felund.testing.vectors import VECTORS, vector_cases, wire_message, wire_messages
from felund.testing.wait import wait_for

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "DB_FILES",
    "FELUND",
    "PY_NODE",
    "REPO",
    "VECTORS",
    "Node",
    "Relay",
    "Tmux",
    "break_store",
    "browser",
    "browser_missing",
    "control_wire",
    "free_port",
    "handled",
    "mend_store",
    "metric_total",
    "metric_value",
    "plaintext_of",
    "running_node",
    "signed_call",
    "signed_wire_message",
    "vector_cases",
    "wait_for",
    "wire_message",
    "wire_messages",
]
