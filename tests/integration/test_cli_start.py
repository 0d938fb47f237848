"""What `felund send`, `inbox` and `status` load when they run against a running node.

tests/unit/test_cli_imports.py reads the imports on the source; this runs the
commands (``python -X importtime``), so that a module loaded later (the parser's
arguments, a lazy module's first use, an argparse default's check) counts too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from felund.testing import Node
from tests.unit.test_cli_imports import NOT_AT_START


def _loaded(node: Node, *args: str) -> set[str]:
    """The modules one run of `felund ARGS` imports, as ``-X importtime`` names them."""
    plain = node.felund
    node.felund = [sys.executable, "-X", "importtime", "-m", "felund"]
    try:
        got = node.cli(*args)
    finally:
        node.felund = plain
    lines = (line.split("|") for line in got.stderr.splitlines() if line.startswith("import"))
    return {parts[2].strip() for parts in lines if len(parts) == 3}


def test_commands_against_a_running_node_load_no_service_machinery(
    make_node: Callable[..., Node],
) -> None:
    node = make_node("quick")
    node.cli("init", "--bind", "127.0.0.1", "--name", "alice")
    node.start()
    circle = node.json("invite")["circle_id"]
    for command in (
        ("send", "--circle-id", circle, "hello"),
        ("inbox", "--circle-id", circle),
        ("status",),
    ):
        loaded = _loaded(node, *command)
        assert {"felund.cli.main", "felund.bus.dealer"} <= loaded, command  # the walk sees them
        assert sorted(m for m in loaded if m.startswith(NOT_AT_START)) == [], command
    assert "hello" in node.cli("inbox", "--circle-id", circle).stdout
