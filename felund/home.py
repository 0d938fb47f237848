"""The state directory of one node (``$FELUND_HOME``) and what lives in it.

Config, identity and database live in the home; the bus's ipc sockets and
the node lock live in a runtime directory (mode 0700), by default ``run/``
inside the home. Two nodes on one machine differ only by home and ports.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from felund import lazy
from felund.config import CONFIG_FILE_NAME, Config
from felund.errors import ConfigError, HomeUnusable, NodeLocked
from felund.files import write_private
from felund.trust.identity import SEED_LEN, IdentityKey, b64, unb64
from felund.v1 import ids

if TYPE_CHECKING:
    import hashlib
    import tempfile
else:  # only a home too deep for a socket path needs tempfile (``felund.lazy``), and
    # hashlib (OpenSSL's start, ~3 ms) only that
    hashlib, tempfile = lazy.module("hashlib"), lazy.module("tempfile")

IDENTITY_FILE = "identity.json"  # {"node_id", "ed25519_seed"}: mode 0600, never logged
LOCK_FILE = "node.lock"
# How many circles the database held at its last change: a database found
# with none while this says some has lost them (truncated, replaced).
CIRCLES_MARK = "circles.mark"
LAST_BACKUP = "last-backup"  # where `felund backup` last wrote, and when
# sun_path is 108 bytes on Linux; keep room for the longest endpoint name.
_MAX_SOCKET_PATH = 100
_LONGEST_ENDPOINT = "supervisor.ctl"


def home_from_env(environ: dict[str, str] | None = None) -> Path:
    """``$FELUND_HOME``, or ``~/.felund``."""
    env = os.environ if environ is None else environ
    value = env.get("FELUND_HOME", "")
    return Path(value).expanduser().resolve() if value else Path.home() / ".felund"


class Layout(NamedTuple):
    """Where each piece of a node's state is."""

    home: Path
    runtime_dir: Path
    database: Path
    runtime_configured: bool  # bus.runtime_dir is set (a tmpfs, as systemd makes it)

    @property
    def metrics_dir(self) -> Path:
        """prometheus-client's multiprocess files, wiped at every node start: on a tmpfs
        (``_memory_dir``), as their pages change at every heartbeat; OSError if the home
        does not exist."""
        if self.runtime_configured:
            return self.runtime_dir / "metrics"
        return _memory_dir(self.home, self.runtime_dir)

    @property
    def config_file(self) -> Path:
        """The node's TOML config."""
        return self.home / CONFIG_FILE_NAME

    @property
    def identity_file(self) -> Path:
        """The node's identity (node_id and signing key)."""
        return self.home / IDENTITY_FILE

    @property
    def lock_file(self) -> Path:
        """Held by the running supervisor, or by a command working offline.

        In the home, not the runtime directory: it guards the database, and a
        second runtime directory must not make a second writer possible.
        """
        return self.home / LOCK_FILE

    def endpoint(self, name: str) -> str:
        """The ZeroMQ address of a bus endpoint."""
        return f"ipc://{self.runtime_dir / name}"


def layout(home: Path, config: Config) -> Layout:
    """Resolve the paths of the node at ``home`` under ``config``."""
    db = Path(config.store.path).expanduser()
    database = db if db.is_absolute() else home / db
    if config.bus.runtime_dir:
        runtime = Path(config.bus.runtime_dir).expanduser()
    else:
        runtime = home / "run"
        if len(str(runtime / _LONGEST_ENDPOINT)) > _MAX_SOCKET_PATH:
            # ipc:// paths are Unix socket paths, bounded by the kernel; a
            # deep home gets a short private directory keyed by its path.
            digest = hashlib.sha256(str(home).encode()).hexdigest()[:16]
            runtime = Path(tempfile.gettempdir()) / f"felund-{os.getuid()}" / digest
    if len(str(runtime / _LONGEST_ENDPOINT)) > _MAX_SOCKET_PATH:
        raise ConfigError(f"bus.runtime_dir {runtime} is too long for a Unix socket path")
    return Layout(home, runtime, database, bool(config.bus.runtime_dir))


def _memory_dir(home: Path, runtime: Path) -> Path:
    """A directory for ``home``'s metric files on a tmpfs: ``$XDG_RUNTIME_DIR``, else ``/dev/shm``;
    OSError if ``home`` does not exist.

    An idle node rewrites its metric files at every heartbeat; on the disk
    that holds the home that was ~110 MB a day. A configured runtime
    directory (systemd's ``RuntimeDirectory=``) is taken as a tmpfs already.
    """
    # The home's device and inode name it: no other directory of the machine has
    # them, a restart or a move keeps them, and a link to the home finds the same
    # name. A digest of its path did that too, less well, at the cost of hashlib
    # and OpenSSL in the supervisor: 3.4 MiB of its RSS, for this name alone.
    st = os.stat(home)
    name = f"felund-metrics-{os.getuid()}-{st.st_dev:x}-{st.st_ino:x}"
    for base in (os.environ.get("XDG_RUNTIME_DIR", ""), "/dev/shm"):  # noqa: S108 - checked at use
        if base and os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
            return Path(base) / name
    return runtime / "metrics"  # no tmpfs: beside the bus sockets


# Where prometheus-client keeps a multiprocess node's values: read once, as it is imported.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_metrics_dir(lay: Layout) -> None:
    """Prepare the node's metrics directory and name it to this process's environment
    (``MULTIPROC_ENV``), for the supervisor that is about to be exec'd."""
    prepare_metrics(lay)
    os.environ[MULTIPROC_ENV] = str(lay.metrics_dir)


def prepare_metrics(lay: Layout) -> None:
    """Create the metrics directory, private to this user; refuse one made by someone else.

    In a shared, sticky directory (``/dev/shm``) another user could have made
    the name first, as a directory of theirs or a link to one.
    """
    directory = lay.metrics_dir
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise ConfigError(f"{directory} is not a directory of this user")
        if st.st_mode & 0o777 != 0o700:
            directory.chmod(0o700)
    except OSError as exc:
        raise ConfigError(f"cannot use {directory} for metrics: {exc.strerror or exc}") from None


def prepare(lay: Layout) -> None:
    """Create the home and runtime directories, private to this user.

    Sets this process's umask to 077 too, so a file anything in it creates
    (SQLite, prometheus-client, a child) is private whatever umask it was given.
    """
    os.umask(0o077)
    try:
        for directory in (lay.home, lay.runtime_dir.parent, lay.runtime_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for directory in (lay.home, lay.runtime_dir):
            if directory.stat().st_uid != os.getuid():
                raise ConfigError(f"{directory} belongs to another user")
            if directory.stat().st_mode & 0o777 != 0o700:
                directory.chmod(0o700)
        if os.statvfs(lay.home).f_flag & os.ST_RDONLY:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(lay.home))
        if not os.access(lay.home, os.W_OK):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(lay.home))
    except OSError as exc:
        raise HomeUnusable(_unusable(exc)) from None


def _unusable(exc: OSError) -> str:
    where = exc.filename or "FELUND_HOME"
    if exc.errno == errno.EROFS:
        return f"{where} is on a read-only file system: felund needs to write its home"
    return f"cannot use {where}: {exc.strerror or exc}"


class Identity(NamedTuple):
    """This node's id and its signing key (an id made before keys is kept as it was)."""

    node_id: str
    key: IdentityKey

    @property
    def signs(self) -> bool:
        """Whether this node signs what it writes (an older id with the derived mark cannot)."""
        return self.key.may_sign(self.node_id)


def load_identity(lay: Layout) -> Identity:
    """This node's identity, created on first use; a key is added to an older one."""
    ident = _read_identity(lay)
    if ident is not None:
        return ident
    # Every process of a node loads this at its start, at once: under a lock,
    # one of them writes the key and the others read it (two keys written in
    # turn would have the store sign with one the file no longer holds).
    try:
        fd = os.open(lay.home, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise HomeUnusable(_unusable(exc)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        ident = _read_identity(lay)
        if ident is None:
            ident = _new_identity(lay)
    finally:
        os.close(fd)
    return ident


def _read_identity(lay: Layout) -> Identity | None:
    """The identity in identity.json; None if the file or its key is missing."""
    try:
        data = json.loads(lay.identity_file.read_text())
        node_id = data["node_id"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{lay.identity_file} is unreadable: {exc}") from None
    if not isinstance(node_id, str) or not ids.is_hex(node_id, 24):
        raise ConfigError(f"{lay.identity_file} holds no valid node_id")
    if "ed25519_seed" not in data:
        return None
    seed = unb64(data["ed25519_seed"], SEED_LEN)
    if seed is None:
        raise ConfigError(f"{lay.identity_file} holds no valid ed25519_seed")
    return Identity(node_id, IdentityKey.from_seed(seed))


def _new_identity(lay: Layout) -> Identity:
    """A fresh key, and the id it derives unless the file holds an older one (kept)."""
    key = IdentityKey.generate()
    try:
        node_id = str(json.loads(lay.identity_file.read_text())["node_id"])
    except FileNotFoundError:
        node_id = key.node_id
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{lay.identity_file} is unreadable: {exc}") from None
    text = json.dumps({"node_id": node_id, "ed25519_seed": b64(key.seed)})
    try:
        write_private(lay.identity_file, text + "\n")
    except OSError as exc:
        raise HomeUnusable(_unusable(exc)) from None
    return Identity(node_id, key)


def load_node_id(lay: Layout) -> str:
    """This node's id, created on first use."""
    return load_identity(lay).node_id


def recorded_circles(lay: Layout) -> int:
    """How many circles the database held at its last recorded change (0 if never)."""
    try:
        count = json.loads((lay.home / CIRCLES_MARK).read_text())["circles"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return count if type(count) is int else 0


def record_circles(lay: Layout, count: int) -> None:
    """Remember how many circles the database holds now."""
    write_private(lay.home / CIRCLES_MARK, json.dumps({"circles": count}) + "\n")


def last_backup(lay: Layout) -> str:
    """Where the last `felund backup` of this home was written, or ""."""
    try:
        return str(json.loads((lay.home / LAST_BACKUP).read_text())["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def record_backup(lay: Layout, path: Path, when: float) -> None:
    """Remember the last backup of this home."""
    write_private(lay.home / LAST_BACKUP, json.dumps({"path": str(path), "ts": int(when)}) + "\n")


class NodeLock:
    """An exclusive flock on the home's lock file, which names its holder."""

    def __init__(self, lay: Layout) -> None:
        self._lay = lay
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if free; False if another process holds it."""
        try:
            fd = os.open(self._lay.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise HomeUnusable(_unusable(exc)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        os.ftruncate(fd, 0)
        # The runtime directory too: a command whose environment names another
        # one still finds the running node's sockets.
        os.write(fd, f"{os.getpid()}\n{self._lay.runtime_dir}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        """Give the lock back."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def holder(self) -> tuple[int | None, Path | None]:
        """The pid and runtime directory written by the current holder."""
        try:
            pid, runtime = ([*self._lay.lock_file.read_text().splitlines(), "", ""])[:2]
        except OSError:
            return None, None
        return (int(pid) if pid.isdigit() else None), (Path(runtime) if runtime else None)


def require_free(lock: NodeLock) -> None:
    """Take the lock, or raise NodeLocked naming the holder."""
    if not lock.try_acquire():
        pid, _ = lock.holder()
        raise NodeLocked(f"another felund process{f' (pid {pid})' if pid else ''} uses this home")
