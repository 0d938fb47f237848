"""systemd's notify protocol: one datagram to ``$NOTIFY_SOCKET``.

Fifteen lines of standard library beat a dependency: the protocol is a
single datagram of ``KEY=VALUE`` lines (sd_notify(3)).
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``) if run under systemd; False otherwise."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(path)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True
