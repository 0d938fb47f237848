"""What a running node's processes hold in memory (issue 20: a lighter node)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from felund.testing import Node


def _mapped(pid: int) -> set[str]:
    """The file names mapped into process ``pid``: C extension modules by module name
    (``_ssl``, ``_asyncio``, ...), shared libraries whole (``libcrypto.so.3``)."""
    names = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        name = Path(line.split()[-1]).name
        names.add(name.split(".cpython-")[0] if ".cpython-" in name else name)
    return names


def _openssl(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith(("libcrypto.so", "libssl.so"))}


def test_processes_load_no_event_loop_tls_or_openssl_they_do_not_use(node: Node) -> None:
    node.cli("send", "--circle-id", node.circle_id, "hello")  # every process at work once
    sup = node.supervisor()
    pids = {"supervisor": sup["pid"], **{n: s["pid"] for n, s in sup["services"].items()}}
    loaded = {name: _mapped(pid) for name, pid in pids.items()}
    assert "_asyncio" in loaded["gossip"]  # the check sees what is there
    # structlog, http.client and prometheus-client name them at import; nobody here uses them.
    assert "_asyncio" not in loaded["supervisor"]
    assert "_asyncio" not in loaded["store"]
    # No TLS, and hashes by the standard library's own code: the system OpenSSL (3.7 MiB
    # resident where loaded) is in none of them (felund.lazy.NODE_PROCESSES_WITHOUT).
    for name, names in loaded.items():
        assert {"_ssl", "_hashlib", "_greenlet"}.isdisjoint(names), (name, names)
        assert not _openssl(names), (name, _openssl(names))


def test_the_openssl_check_sees_it_where_it_is() -> None:
    probe = "import os, ssl, sys; print(os.getpid(), flush=True); sys.stdin.read()"
    with subprocess.Popen(
        [sys.executable, "-c", probe], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        names = _mapped(int(proc.stdout.readline()))
        proc.stdin.close()  # the probe's read ends: it exits
        assert proc.wait(timeout=30) == 0
    assert "_ssl" in names and _openssl(names), names


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
