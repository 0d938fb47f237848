"""The supervisor's state machine, sans-IO: child table, backoff, flapping, liveness.

It takes events (started, exited, heartbeat) and a clock, and answers with
actions (start, terminate, kill). The supervisor process does the I/O.
Children may also come and go at runtime (relay-sync follows the relay
setting): ``hold`` adds one that waits for its settings, ``restart`` starts
one (again) at once with fresh settings, ``drop`` stops one for good. A stop
asked for on purpose is neither a crash nor a restart in the counts.

A child that exits too often is given up (``FAILED``), and tried again at a
slow pace (``given_up_retry_s``): a cause fixed meanwhile (a full disk
freed, a file restored) brings it back without a restart by hand. A try
that does not run ``healthy_after_s`` is given up again at once.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from felund.actor.backoff import delay
from felund.config import SupervisorConfig

# A child gets this long to send its first heartbeat (it may be opening a
# large database) before it counts as stuck.
STARTUP_GRACE_S = 10.0


class State(StrEnum):
    """Where a child is in its life."""

    WAITING = "waiting"  # not started until its settings are known
    STARTING = "starting"  # spawned, no heartbeat yet
    RUNNING = "running"
    BACKOFF = "backoff"  # exited; waiting to be started again
    STOPPING = "stopping"  # sent SIGTERM; SIGKILL follows after a timeout
    FAILED = "failed"  # crashed too often: given up, tried again every given_up_retry_s
    STOPPED = "stopped"  # the node is shutting down


@dataclass(slots=True)
class Child:
    """What the supervisor knows of one service."""

    name: str
    state: State = State.BACKOFF
    since: float = 0.0  # when it entered its state
    pid: int | None = None
    restarts: int = 0
    started_at: float = 0.0
    last_heartbeat: float = 0.0
    start_at: float = 0.0  # when BACKOFF (or FAILED) ends with a start
    stop_deadline: float = 0.0  # when STOPPING turns into SIGKILL
    failures: int = 0  # consecutive unhealthy exits, for the backoff
    crashes: deque[float] = field(default_factory=deque)
    last_exit: int | None = None
    reason: str = ""
    planned: bool = False  # stopped on purpose (settings changed): start again at once
    wanted: bool = True  # False once dropped: forgotten when its process is gone
    given_up: bool = False  # failed; until a try runs healthy, an exit fails it again

    def enter(self, state: State, now: float) -> None:
        """Move to ``state`` (``since`` is kept when it stays in the same one)."""
        if state is not self.state:
            self.state, self.since = state, now


@dataclass(frozen=True, slots=True)
class Action:
    """Something the supervisor must do to a child now."""

    kind: str  # "start", "terminate", "kill"
    name: str
    pid: int | None = None


class Supervision:
    """The child table and its rules."""

    def __init__(
        self, names: list[str], policy: SupervisorConfig, rng: random.Random | None = None
    ) -> None:
        self.policy = policy
        self.children = {n: Child(n) for n in names}
        self._rng = rng or random.Random()
        self.shutting_down = False

    def started(self, name: str, pid: int, now: float) -> None:
        """A child process was spawned."""
        child = self.children[name]
        child.enter(State.STARTING, now)
        child.pid, child.started_at, child.last_heartbeat = pid, now, now
        child.planned = False

    def heartbeat(self, name: str, pid: int, now: float) -> bool:
        """A heartbeat arrived; True if it made the child RUNNING just now."""
        child = self.children.get(name)
        if child is None or child.pid != pid or child.state not in (State.STARTING, State.RUNNING):
            return False
        child.last_heartbeat = now
        if child.state is State.STARTING:
            child.enter(State.RUNNING, now)
            return True
        return False

    def exited(self, name: str, code: int, now: float) -> State:
        """A child process ended with ``code``; decide what comes next."""
        child = self.children[name]
        child.pid, child.last_exit = None, code
        if self.shutting_down or not child.wanted:
            child.enter(State.STOPPED, now)
            if not child.wanted:
                del self.children[name]
            return State.STOPPED
        if child.planned:
            child.enter(State.BACKOFF, now)
            child.start_at, child.failures = now, 0
            child.reason = "restarting with new settings"
            return child.state
        healthy = (
            child.state is State.RUNNING and now - child.started_at >= self.policy.healthy_after_s
        )
        child.failures = 1 if healthy else child.failures + 1
        child.crashes.append(now)
        while child.crashes and now - child.crashes[0] > self.policy.flap_window_s:
            child.crashes.popleft()
        if child.given_up and not healthy:
            return self._give_up(child, now, f"a try exited with status {code}")
        child.given_up = False
        if len(child.crashes) > self.policy.flap_max_restarts:
            return self._give_up(
                child,
                now,
                f"exited {len(child.crashes)} times in "
                f"{self.policy.flap_window_s:g} s (last status {code})",
            )
        child.enter(State.BACKOFF, now)
        child.start_at = now + self.backoff(child.failures)
        child.reason = f"exited with status {code}"
        return child.state

    def _give_up(self, child: Child, now: float, reason: str) -> State:
        child.enter(State.FAILED, now)
        child.given_up = True
        child.start_at = now + self.policy.given_up_retry_s
        child.reason = reason
        return child.state

    def backoff(self, failures: int) -> float:
        """Delay before the next start: doubling from the initial delay, capped, ±20 % jitter."""
        policy = self.policy
        return delay(failures, policy.backoff_initial_s, policy.backoff_max_s, 0.2, self._rng)

    def due(self, now: float) -> list[Action]:
        """The actions to take at ``now``."""
        actions: list[Action] = []
        deadline = self.policy.heartbeat_interval_s * self.policy.heartbeat_misses
        for child in self.children.values():
            start_at = self.next_start(child)
            if start_at is not None and now >= start_at:
                if child.last_exit is not None and not child.planned:
                    child.restarts += 1
                actions.append(Action("start", child.name))
            elif child.state in (State.STARTING, State.RUNNING):
                starting = child.state is State.STARTING
                limit = max(deadline, STARTUP_GRACE_S) if starting else deadline
                if now - child.last_heartbeat > limit:
                    child.enter(State.STOPPING, now)
                    child.stop_deadline = now + self.policy.stop_timeout_s
                    child.reason = f"no heartbeat for {now - child.last_heartbeat:.1f} s"
                    actions.append(Action("terminate", child.name, child.pid))
            elif child.state is State.STOPPING and now >= child.stop_deadline and child.pid:
                actions.append(Action("kill", child.name, child.pid))
                child.stop_deadline = now + self.policy.stop_timeout_s
        return actions

    def next_start(self, child: Child) -> float | None:
        """When ``due`` starts a child that is down (backing off or given up), else None."""
        down = child.state in (State.BACKOFF, State.FAILED) and not self.shutting_down
        return child.start_at if down else None

    def shutdown(self, now: float) -> list[Action]:
        """Stop everything: terminate the running children."""
        self.shutting_down = True
        actions = []
        for child in self.children.values():
            if child.pid is not None:
                child.enter(State.STOPPING, now)
                child.stop_deadline = now + self.policy.stop_timeout_s
                actions.append(Action("terminate", child.name, child.pid))
            elif child.state is not State.FAILED:
                child.enter(State.STOPPED, now)
        return actions

    def hold(self, name: str, now: float) -> None:
        """Add a child that waits (``restart`` starts it, ``drop`` forgets it)."""
        if name not in self.children:
            self.children[name] = Child(
                name, State.WAITING, since=now, reason="waiting for its settings"
            )

    def restart(self, name: str, now: float) -> list[Action]:
        """Run a child with fresh settings: start it now, or stop it and then start it.

        A waiting, backing-off or failed child starts at once with a clean
        slate: new settings deserve a new chance.
        """
        if self.shutting_down:
            return []
        child = self.children.setdefault(name, Child(name, since=now))
        child.wanted, child.planned = True, True
        if child.state in (State.STARTING, State.RUNNING):
            return self._stop(child, now, "restarting with new settings")
        if child.pid is None:  # not STOPPING: that one starts again once it exits
            child.enter(State.BACKOFF, now)
            child.start_at, child.failures, child.given_up = now, 0, False
            child.crashes.clear()
            child.reason = ""
        return []

    def drop(self, name: str, now: float) -> list[Action]:
        """Stop a child for good (no longer wanted); forget it once its process is gone."""
        child = self.children.get(name)
        if child is None:
            return []
        child.wanted, child.planned = False, False
        if child.pid is None:
            del self.children[name]
            return []
        if child.state is State.STOPPING:
            return []  # a terminate is on its way already
        return self._stop(child, now, "no longer wanted")

    def _stop(self, child: Child, now: float, reason: str) -> list[Action]:
        child.enter(State.STOPPING, now)
        child.stop_deadline = now + self.policy.stop_timeout_s
        child.reason = reason
        return [Action("terminate", child.name, child.pid)]

    def alive(self) -> list[Child]:
        """Children that still have a process."""
        return [c for c in self.children.values() if c.pid is not None]
