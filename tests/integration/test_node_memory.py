"""What a running node's processes hold in memory (issue 20: a lighter node)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from felund.testing import Node


def _extensions(pid: int) -> set[str]:
    """The C extension modules mapped into process ``pid`` (``_ssl``, ``_asyncio``, ...)."""
    names = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        path = line.split()[-1]
        if ".cpython-" in path:
            names.add(Path(path).name.split(".cpython-")[0])
    return names


def test_processes_load_no_event_loop_or_tls_they_do_not_use(node: Node) -> None:
    node.cli("send", "--circle-id", node.circle_id, "hello")  # every process at work once
    sup = node.supervisor()
    pids = {"supervisor": sup["pid"], **{n: s["pid"] for n, s in sup["services"].items()}}
    loaded = {name: _extensions(pid) for name, pid in pids.items()}
    # Gossip runs an event loop, and asyncio imports ssl: the check sees both.
    assert {"_asyncio", "_ssl"} <= loaded["gossip"]
    # structlog, http.client and prometheus-client name them at import; nobody here uses them.
    assert "_asyncio" not in loaded["supervisor"]
    # Nor does the supervisor hash anything: OpenSSL's libcrypto is 3.4 MiB of RSS.
    assert "_hashlib" not in loaded["supervisor"], loaded["supervisor"]
    assert "_hashlib" in loaded["store"]  # the check sees it where it is
    assert {"_asyncio", "_ssl"}.isdisjoint(loaded["store"]), loaded["store"]


def test_gossip_imports_no_openssl_backend_of_cryptography() -> None:
    """Gossip makes no X25519 key: cryptography's OpenSSL backend module (RSA, EC and
    the rest, about 2 MiB of RSS) stays out of it."""
    probe = (
        "import sys, services.gossip; "
        "print('cryptography.hazmat.backends.openssl.backend' in sys.modules, "
        "'cryptography.hazmat.primitives.ciphers.aead' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["False", "True"]  # the check sees cryptography where it is
