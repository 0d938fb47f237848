"""The supervisor (``felund run``): the node's root process.

- Owns: the node lock, the bus proxy (XSUB ``bus.in`` / XPUB ``bus.out``),
  the child table, ``/metrics`` for the whole node (prometheus-client
  multiprocess mode, served by ``felund.actor.metrics_http``), and systemd
  notifications.
- Serves: ``supervisor.ctl`` (ROUTER): ``supervisor.status``.
- Subscribes: ``sys.svc.heartbeat``, ``sys.settings.changed``. Publishes:
  ``sys.svc.state``, ``sys.log``.
- Children start as ``python -m services.<module>``; one that exits is
  restarted after a doubling, jittered delay, and given up (``failed``)
  when it crashes too often, while the rest keeps running; a child given up
  is tried again every ``supervisor.given_up_retry_s``. One that stops
  heartbeating is sent SIGTERM, then SIGKILL.
- Status (``supervisor.status``): per child its state, since when, its
  restarts and when it is next started, so ``felund status`` answers from
  here without waiting on a child that is down.
- relay-sync follows the store's effective relay URL (the runtime setting,
  else ``relay.url``), which every store heartbeat and ``sys.settings.changed``
  carry: it waits until the store has said, runs with that URL (as
  ``FELUND_RELAY_URL``), restarts when it changes, and stops when it is "".
- Restart: holds nothing durable; a new supervisor starts every child anew,
  and learns the relay URL from the store again.
"""

from __future__ import annotations

from felund import lazy

if __name__ == "__main__":  # run as the process, not imported by a test
    lazy.unavailable(*lazy.NODE_PROCESSES_WITHOUT)

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import zmq
from prometheus_client import multiprocess
from prometheus_client.registry import CollectorRegistry

from felund import logs, metric_files, metrics
from felund.actor import exposition, sdnotify
from felund.actor.context import Context, load_context
from felund.actor.metrics_http import MetricsServer
from felund.actor.supervision import Action, Child, State, Supervision
from felund.bus.envelope import Frame
from felund.bus.sockets import Bus
from felund.config import relay_url_problem
from felund.errors import ConfigError, NodeLocked
from felund.home import MULTIPROC_ENV, NodeLock, require_free, use_metrics_dir
from felund.protocol import (
    ENDPOINT_EVENTS_IN,
    ENDPOINT_EVENTS_OUT,
    ENDPOINT_SUPERVISOR_CTL,
    ERR_UNKNOWN_OP,
    GOSSIP_FD_ENV,
    OP_SUP_STATUS,
    SUPERVISOR_PID_ENV,
    SVC_GOSSIP,
    SVC_RELAY_SYNC,
    SVC_STORE,
    SVC_SUPERVISOR,
    TOPIC_HEARTBEAT,
    TOPIC_SETTINGS_CHANGED,
    TOPIC_SVC_STATE,
)

# The node's children, in start order; each is a module of services/.
# The ui attaches, it is no child.
CHILDREN: dict[str, str] = {SVC_STORE: "services.store", SVC_GOSSIP: "services.gossip"}
# Children that run only while a setting asks for them (relay-sync: a relay URL).
OPTIONAL_CHILDREN: dict[str, str] = {SVC_RELAY_SYNC: "services.relay_sync"}
MODULES: dict[str, str] = {**CHILDREN, **OPTIONAL_CHILDREN}
RELAY_URL_ENV = "FELUND_RELAY_URL"  # the config override relay-sync reads relay.url from
LOCK_WAIT_S = 5.0  # a command working offline holds the lock for a moment
POLL_MS = 100


class Proxy:
    """The XSUB/XPUB forwarder, in a thread of its own (libzmq does the work)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._ctl = f"inproc://proxy-ctl-{id(self)}"
        self._ready = threading.Event()
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="bus-proxy", daemon=True)

    def start(self) -> None:
        """Bind both sides; raise if they cannot be bound."""
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            xsub = self._bus.socket(zmq.XSUB)
            xsub.bind(self._bus.endpoint(ENDPOINT_EVENTS_IN))
            xpub = self._bus.socket(zmq.XPUB)
            xpub.bind(self._bus.endpoint(ENDPOINT_EVENTS_OUT))
            ctl = self._bus.ctx.socket(zmq.PAIR)
            ctl.bind(self._ctl)
        except zmq.ZMQError as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        zmq.proxy_steerable(xsub, xpub, None, ctl)
        for sock in (xsub, xpub, ctl):
            sock.close(linger=0)

    def stop(self) -> None:
        """End the forwarding loop."""
        ctl = self._bus.ctx.socket(zmq.PAIR)
        ctl.connect(self._ctl)
        ctl.send(b"TERMINATE")
        self._thread.join(5)
        ctl.close(linger=0)


class Supervisor:
    """The process table, its I/O, and the node's status."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        cfg = ctx.config
        self.log = logs.setup(SVC_SUPERVISOR, ctx.node_id, cfg.log.level, cfg.log.format)
        self.bus = Bus(ctx.layout, SVC_SUPERVISOR, cfg.bus)
        self.table = Supervision(list(CHILDREN), cfg.supervisor)
        # Until the store says which relay to use (its setting may differ
        # from the config), relay-sync waits rather than start and stop again.
        self.table.hold(SVC_RELAY_SYNC, time.monotonic())
        self.relay_url: str | None = None  # what relay-sync runs with; None: not known yet
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.metrics_url = ""
        self.metrics_server: MetricsServer | None = None
        gossip = cfg.gossip
        try:
            self.gossip_sock = socket.create_server((gossip.bind, gossip.port), backlog=128)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen for peers on {gossip.bind}:{gossip.port}: {exc.strerror}"
            ) from None
        self.gossip_addr = "{}:{}".format(*self.gossip_sock.getsockname()[:2])
        self._serve_metrics()  # here, like the gossip socket: a busy port is one line at start
        self.stop_requested = False
        self.ready = False
        self.reports: dict[str, dict[str, Any]] = {}  # child -> its last heartbeat's connectivity
        self._next_watchdog = 0.0

    def run(self) -> int:
        """Run the node until SIGTERM/SIGINT; the exit status."""
        proxy = Proxy(self.bus)
        proxy.start()
        self.pub = self.bus.publisher()
        logs.publish_to(self.pub.publish)
        sub = self.bus.subscriber(TOPIC_HEARTBEAT, TOPIC_SETTINGS_CHANGED)
        server = self.bus.rpc_server(ENDPOINT_SUPERVISOR_CTL)
        poller = zmq.Poller()
        poller.register(sub.sock, zmq.POLLIN)
        poller.register(server.sock, zmq.POLLIN)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.log.info(
            "node.starting",
            home=str(self.ctx.layout.home),
            metrics_url=self.metrics_url,
            children=list(self.table.children),
        )
        shutdown_started = False
        while True:
            now = time.monotonic()
            if self.stop_requested and not shutdown_started:
                shutdown_started = True
                sdnotify.notify("STOPPING=1")
                self.log.info("node.stopping")
                self._act(self.table.shutdown(now))
            self._reap(now)
            if shutdown_started and not self.table.alive():
                break
            self._act(self.table.due(now))
            for sock, _ in poller.poll(POLL_MS):
                if sock is sub.sock:
                    while (got := sub.recv_nowait()) is not None:
                        self._on_event(got.frame)
                else:
                    while (req := server.recv_nowait()) is not None:
                        if req.frame.topic == OP_SUP_STATUS:
                            server.reply(req, self.status())
                        else:
                            server.error(
                                req, ERR_UNKNOWN_OP, f"unknown operation {req.frame.topic[:64]!r}"
                            )
            self._tick(now)
        logs.publish_to(None)
        if self.metrics_server is not None:
            self.metrics_server.stop()
        proxy.stop()
        self.bus.close()
        self.log.info("node.stopped")
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested = True

    def _serve_metrics(self) -> None:
        cfg = self.ctx.config.metrics
        if not cfg.enabled:
            return
        registry = CollectorRegistry()
        metric_files.TolerantCollector(registry)
        try:
            server = MetricsServer.bind(
                cfg.bind, cfg.port, lambda accept: exposition.render(registry, accept), self.log
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {cfg.bind}:{cfg.port}: {exc.strerror} "
                "(metrics.port in the config, or FELUND_METRICS_PORT)"
            ) from None
        server.start()
        self.metrics_server = server
        host = cfg.bind if ":" not in cfg.bind else f"[{cfg.bind}]"
        self.metrics_url = f"http://{host}:{server.port}/metrics"

    def _act(self, actions: list[Action]) -> None:
        for action in actions:
            if action.kind == "start":
                self._spawn(action.name)
            elif action.pid is not None:
                sig = signal.SIGTERM if action.kind == "terminate" else signal.SIGKILL
                child = self.table.children[action.name]
                fields = {
                    "child": action.name,
                    "child_pid": action.pid,
                    "reason": child.reason,
                    "signal": sig.name,
                }
                if child.planned or not child.wanted:
                    self.log.info("child.stopping", **fields)
                elif not self.table.shutting_down:
                    metrics.HEARTBEATS_MISSED.labels(action.name).inc()
                    self.log.warning("child.unresponsive", **fields)
                with contextlib.suppress(ProcessLookupError):  # gone already: _reap sees it
                    os.kill(action.pid, sig)
                self._publish_state(action.name)

    def _spawn(self, name: str) -> None:
        env, fds = {**os.environ, SUPERVISOR_PID_ENV: str(os.getpid())}, tuple[int, ...]()
        # The port peers reach us at, also when the config leaves it to the kernel
        # (gossip.port 0): the store's invite codes and relay-sync's presence name it.
        env["FELUND_GOSSIP_PORT"] = str(self.gossip_sock.getsockname()[1])
        if name == SVC_GOSSIP:
            # The listening socket is ours: restarting gossip loses no
            # connection waiting in the kernel's backlog.
            env[GOSSIP_FD_ENV] = str(self.gossip_sock.fileno())
            fds = (self.gossip_sock.fileno(),)
        elif name == SVC_RELAY_SYNC:
            # The store's setting wins over the config (a restart is how it changes).
            env[RELAY_URL_ENV] = self.relay_url or ""
        child = self.table.children[name]
        restarted = child.last_exit is not None and not child.planned  # as due() counted it
        proc = subprocess.Popen(
            [sys.executable, "-m", MODULES[name]],
            stdin=subprocess.DEVNULL,
            close_fds=True,
            env=env,
            pass_fds=fds,
        )
        self.procs[name] = proc
        self.table.started(name, proc.pid, time.monotonic())
        if restarted:
            metrics.SERVICE_RESTARTS.labels(name).inc()
        self.log.info("child.started", child=name, child_pid=proc.pid, restarts=child.restarts)
        self._publish_state(name)

    def _reap(self, now: float) -> None:
        for name, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.procs[name]
            multiprocess.mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
            planned = self.table.children[name].planned
            state = self.table.exited(name, code, now)
            child = self._child(name)
            if state is State.FAILED:
                self.log.error(
                    "child.failed",
                    child=name,
                    child_pid=proc.pid,
                    reason=child.reason,
                    retry_in_s=round(child.start_at - now, 2),
                )
            elif state is State.BACKOFF and not planned:
                self.log.warning(
                    "child.exited",
                    child=name,
                    child_pid=proc.pid,
                    status=code,
                    restart_in_s=round(child.start_at - now, 2),
                )
            else:
                self.log.info("child.stopped", child=name, child_pid=proc.pid, status=code)
            self._publish_state(name)

    def _on_event(self, frame: Frame) -> None:
        body = frame.body
        if not isinstance(body, dict):
            return
        if frame.topic == TOPIC_HEARTBEAT:
            self._on_heartbeat(body)
        # Level-triggered: every store heartbeat says the relay URL, so a lost
        # event (or a supervisor restart) costs at most one interval.
        url = body.get("relay_url")
        if frame.header.src == SVC_STORE and isinstance(url, str):
            self._follow_relay_url(url)

    def _follow_relay_url(self, url: str) -> None:
        """Run relay-sync with the store's relay URL: start, restart on a change, stop on ""."""
        if url == self.relay_url:
            return
        problem = relay_url_problem(url)
        if problem:  # the store checks before storing; this one came from elsewhere
            self.log.warning("relay.url_refused", detail=problem)
            return
        self.relay_url = url
        now = time.monotonic()
        if url:
            actions = self.table.restart(SVC_RELAY_SYNC, now)
        else:
            actions = self.table.drop(SVC_RELAY_SYNC, now)
        # The host only: a URL's path is the relay operator's business, not our logs'.
        self.log.info("relay.url", relay=urlsplit(url).netloc or "none")
        self._act(actions)
        self._publish_state(SVC_RELAY_SYNC)

    def _on_heartbeat(self, body: dict[str, Any]) -> None:
        name, pid = body.get("service"), body.get("pid")
        if not isinstance(name, str) or type(pid) is not int:
            return
        # What a child says of its connections, for `felund status` (relay-sync's is capped
        # at 1000 circles by relay-sync; gossip's likewise).
        report = body.get("connectivity")
        if name in MODULES and isinstance(report, dict):
            self.reports[name] = report
        if self.table.heartbeat(name, pid, time.monotonic()):
            self._publish_state(name)
            if name == SVC_STORE and not self.ready:
                self.ready = True
                sdnotify.notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=serving")
                self.log.info("node.ready")

    def _tick(self, now: float) -> None:
        # systemd arms the watchdog at READY=1; until then a slow start is
        # bounded by TimeoutStartSec instead.
        if now >= self._next_watchdog:
            self._next_watchdog = now + self.ctx.config.supervisor.heartbeat_interval_s
            self.bus.flush_metrics()
            if self.ready:
                sdnotify.notify("WATCHDOG=1")

    def _publish_state(self, name: str) -> None:
        """Say a child's state on the bus and in the metrics (each change, once)."""
        status = self._child_status(name)
        metrics.SERVICE_UP.labels(name).set(status["state"] == State.RUNNING)
        metrics.SERVICE_FAILED.labels(name).set(status["state"] == State.FAILED)
        metrics.SERVICE_NEXT_START.labels(name).set(status["next_start"] or 0)
        self.pub.publish(TOPIC_SVC_STATE, {"service": name, **status})

    def _child(self, name: str) -> Child:
        """A child of the table; one dropped from it shows as stopped."""
        child = self.table.children.get(name)
        return child or Child(name, State.STOPPED, reason="not wanted (its setting is off)")

    def _child_status(self, name: str) -> dict[str, Any]:
        c = self._child(name)
        start_at = self.table.next_start(c)
        return {
            "pid": c.pid,
            "state": c.state.value,
            "since": _wall(c.since) if c.since else None,
            "restarts": c.restarts,
            "last_exit": c.last_exit,
            "reason": c.reason,
            "next_start": None if start_at is None else _wall(start_at),
        }

    def status(self) -> dict[str, Any]:
        """The answer to ``supervisor.status``."""
        return {
            "node_id": self.ctx.node_id,
            "pid": os.getpid(),
            "metrics_url": self.metrics_url,
            "gossip_addr": self.gossip_addr,
            "relay_url": self.relay_url,
            "services": {name: self._child_status(name) for name in self.table.children},
            "connectivity": {
                name: report
                for name, report in self.reports.items()
                if name in self.table.children and self._child(name).state is State.RUNNING
            },
        }


def _wall(monotonic: float) -> float:
    """A time of the monotonic clock as Unix time (what status and metrics show)."""
    return round(time.time() - (time.monotonic() - monotonic), 3)


def _clean_metrics_dir(directory: Path, keep_mine: bool) -> None:
    # Files of earlier processes would add their counts to ours forever; at a
    # clean stop, no file is left behind on the tmpfs (memory until reboot).
    mine = f"_{os.getpid()}.db"
    for path in directory.glob("*.db"):
        if not (keep_mine and path.name.endswith(mine)):
            path.unlink(missing_ok=True)
    if not keep_mine:
        with contextlib.suppress(OSError):
            directory.rmdir()


def main() -> None:
    """Entry point: ``python -m services.supervisor`` (what ``felund run`` execs)."""
    ctx = load_context()
    metrics_dir = ctx.layout.metrics_dir
    if os.environ.get(MULTIPROC_ENV) != str(metrics_dir):
        # prometheus-client picks its storage when first imported, which has
        # happened already: start again with the directory in place (`felund run`
        # names it before it execs this, so only a start of this module alone does).
        try:
            use_metrics_dir(ctx.layout)
        except ConfigError as exc:
            print(f"felund: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        os.execv(sys.executable, [sys.executable, "-m", "services.supervisor"])  # noqa: S606
    lock = NodeLock(ctx.layout)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            require_free(lock)
            break
        except NodeLocked as exc:
            if time.monotonic() > deadline:
                print(f"felund: {exc}; is the node already running?", file=sys.stderr)
                raise SystemExit(1) from None
            time.sleep(0.1)
    _clean_metrics_dir(metrics_dir, keep_mine=True)
    try:
        code = Supervisor(ctx).run()
    except ConfigError as exc:
        print(f"felund: {exc}", file=sys.stderr)
        code = 2
    finally:
        _clean_metrics_dir(metrics_dir, keep_mine=False)  # while the lock keeps others out
        lock.release()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
