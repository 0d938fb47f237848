"""Gossip's protocol cores are sans-IO: no event loop, no socket, no bus among their imports."""

from __future__ import annotations

import pytest

from tests.unit.test_boundaries import ROOT, imports

SANS_IO = [
    "handshake", "v1_frames", "v1_round", "native_frames", "native_session",
    "reconcile", "addresses", "events",
]  # fmt: skip
IO = ("asyncio", "socket", "selectors", "zmq", "aiohttp", "felund.bus", "felund.gossip.link")


@pytest.mark.parametrize("name", SANS_IO)
def test_a_protocol_core_imports_no_io(name: str) -> None:
    module = f"felund.gossip.{name}"
    found = imports((ROOT / "felund" / "gossip" / f"{name}.py").read_text(), module)
    assert found  # the check is not vacuous
    assert [n for n in found if n.split(".")[0] in IO or n.startswith(IO)] == []
