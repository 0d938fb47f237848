"""A private tmux server for screen tests of the curses ui."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

_TMUX_SERVERS = itertools.count()
# Our own tmux server: a bare config (nothing of the user's), no status line
# (the pane is the whole window), and a pane that stays after its command
# exits so a test can still read the screen.
_TMUX_CONFIG = """\
set -g status off
set -g remain-on-exit on
set -g history-limit 0
set -g escape-time 0
set -s set-clipboard on
"""


class Tmux:
    """A private tmux server (``-L``, never the user's) running one command, for screen tests."""

    def __init__(self, binary: str = "tmux") -> None:
        found = shutil.which(binary)
        if found is None:
            raise FileNotFoundError(f"{binary} is not installed")
        self.binary = found
        self.socket = f"felund-test-{os.getpid()}-{next(_TMUX_SERVERS)}"
        self.dir = Path(tempfile.mkdtemp(prefix="felund-tmux-"))
        self.config = self.dir / "tmux.conf"
        self.config.write_text(_TMUX_CONFIG)
        self.status_file = self.dir / "exit-status"
        self.target = "ui:0.0"
        self.started = False
        self.socket_path: Path | None = None

    def _tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run(
            [self.binary, "-L", self.socket, "-f", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} -> {proc.returncode}: {proc.stderr}")
        return proc.stdout

    def start(self, cmd: list[str], env: dict[str, str], cols: int = 100, rows: int = 30) -> None:
        """Run ``cmd`` (argv) in a detached session of ``cols`` x ``rows``."""
        # tmux may mark a pane dead before it has reaped its process (no status
        # yet), so a shell writes the exit status down; ``cmd`` is its arguments.
        argv = ["sh", "-c", '"$@"; echo $? > "$0"', str(self.status_file), *cmd]
        # The server takes its environment from the client that starts it.
        self._tmux(
            "new-session", "-d", "-s", "ui", "-x", str(cols), "-y", str(rows), "--", *argv, env=env
        )
        self.started = True
        self.socket_path = Path(self._tmux("display-message", "-p", "#{socket_path}").strip())

    def send_keys(self, *keys: str, literal: bool = False) -> None:
        """Type keys: tmux key names (``Enter``, ``C-q``, ``F1``), or text with ``literal``."""
        self._tmux("send-keys", "-t", self.target, *(["-l"] if literal else []), *keys)

    def capture(self) -> str:
        """The visible screen, one line per row."""
        return self._tmux("capture-pane", "-p", "-t", self.target)

    def wait_for_text(self, text: str, timeout: float = 10.0) -> str:
        """The screen, once it shows ``text``; AssertionError with the screen after ``timeout``."""
        return self.wait_until(lambda screen: text in screen, timeout, repr(text))

    def wait_until(
        self, check: Callable[[str], bool], timeout: float = 10.0, what: str = "its condition"
    ) -> str:
        """The screen, once ``check(screen)`` holds; bounded in time."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.capture()
            if check(screen):
                return screen
            time.sleep(0.05)
        raise AssertionError(f"screen never showed {what} in {timeout} s:\n{screen}")

    def clipboard(self) -> str:
        """What the program last put on the clipboard (OSC 52, which tmux takes as a
        paste buffer); "" if nothing yet."""
        try:
            return self._tmux("show-buffer")
        except AssertionError:
            return ""  # no buffer yet

    def resize(self, cols: int, rows: int) -> None:
        """Resize the window (and so the pane, and the program's terminal)."""
        self._tmux("resize-window", "-t", "ui", "-x", str(cols), "-y", str(rows))

    def pane_exit(self) -> int | None:
        """The command's exit status once it has exited, else None."""
        try:
            status = self.status_file.read_text().strip()
        except FileNotFoundError:
            return None
        return int(status) if status.isdigit() else None  # None: still being written

    def kill(self) -> None:
        """Stop the server and everything in it."""
        if self.started:
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self._tmux("kill-server")
            self.started = False
            if self.socket_path is not None:  # tmux leaves its socket file behind
                self.socket_path.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
