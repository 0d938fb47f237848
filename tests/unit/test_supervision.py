"""The supervisor's state machine, driven by a fake clock (plain floats)."""

from __future__ import annotations

import itertools
import random

import pytest

from felund.actor.supervision import STARTUP_GRACE_S, Action, State, Supervision
from felund.config import SupervisorConfig

T0 = 1000.0  # a monotonic clock is far from zero
NAMES = ["store", "gossip"]


class Driver:
    """Does what the supervisor process does with actions: spawn with fresh pids."""

    def __init__(self, sup: Supervision) -> None:
        self.sup = sup
        self._pids = itertools.count(100)

    def tick(self, now: float) -> list[Action]:
        actions = self.sup.due(now)
        for action in actions:
            if action.kind == "start":
                self.sup.started(action.name, next(self._pids), now)
        return actions

    def pid(self, name: str) -> int:
        pid = self.sup.children[name].pid
        assert pid is not None
        return pid


def make(policy: SupervisorConfig | None = None, names: list[str] | None = None) -> Supervision:
    return Supervision(names or list(NAMES), policy or SupervisorConfig(), random.Random(1234))


def kinds(actions: list[Action]) -> list[tuple[str, str]]:
    return sorted((a.kind, a.name) for a in actions)


def test_first_due_starts_every_child() -> None:
    sup = make(names=["store", "gossip", "relay"])
    drv = Driver(sup)
    actions = drv.tick(T0)
    assert kinds(actions) == [("start", "gossip"), ("start", "relay"), ("start", "store")]
    assert all(a.pid is None for a in actions)
    assert {c.state for c in sup.children.values()} == {State.STARTING}
    assert all(c.restarts == 0 for c in sup.children.values())
    assert drv.tick(T0 + 0.5) == []


def test_heartbeat_makes_a_child_running_once() -> None:
    sup = make()
    drv = Driver(sup)
    drv.tick(T0)
    assert sup.heartbeat("store", drv.pid("store"), T0 + 0.2) is True
    assert sup.heartbeat("store", drv.pid("store"), T0 + 1.2) is False
    assert sup.children["store"].state is State.RUNNING
    assert sup.children["gossip"].state is State.STARTING


def exit_delays(
    sup: Supervision, drv: Driver, name: str, count: int, run_for: float
) -> list[float]:
    """Start, let run for ``run_for`` and exit ``count`` times; each restart delay."""
    now = T0
    drv.tick(now)
    delays: list[float] = []
    for _ in range(count):
        if run_for:
            sup.heartbeat(name, drv.pid(name), now + 0.1)
        now += run_for or 0.1
        assert sup.exited(name, 1, now) is State.BACKOFF
        child = sup.children[name]
        delays.append(child.start_at - now)
        assert drv.tick(child.start_at - 0.001) == []  # not a moment early
        now = child.start_at
        assert kinds(drv.tick(now)) == [("start", name)]
    return delays


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    policy = SupervisorConfig(flap_max_restarts=1000)
    sup = make(policy, ["store"])
    delays = exit_delays(sup, Driver(sup), "store", 10, run_for=0.0)
    bases = [1, 2, 4, 8, 16, 32, 32, 32, 32, 32]
    for delay, base in zip(delays, bases, strict=True):
        assert base * 0.8 <= delay <= base * 1.2, (delays, bases)
    assert len({round(d, 9) for d in delays}) == len(delays)  # jittered, not fixed


def test_backoff_cap_is_the_configured_one() -> None:
    policy = SupervisorConfig(backoff_initial_s=0.5, backoff_max_s=3.0, flap_max_restarts=1000)
    sup = make(policy, ["store"])
    delays = exit_delays(sup, Driver(sup), "store", 8, run_for=0.0)
    bases = [0.5, 1, 2, 3, 3, 3, 3, 3]
    for delay, base in zip(delays, bases, strict=True):
        assert base * 0.8 <= delay <= base * 1.2, (delays, bases)


def test_short_runs_keep_growing_the_backoff() -> None:
    # Running (heartbeating) but for less than healthy_after_s is not healthy.
    policy = SupervisorConfig(flap_max_restarts=1000)
    sup = make(policy, ["store"])
    delays = exit_delays(sup, Driver(sup), "store", 4, run_for=policy.healthy_after_s / 2)
    for delay, base in zip(delays, [1, 2, 4, 8], strict=True):
        assert base * 0.8 <= delay <= base * 1.2


def test_a_healthy_run_resets_the_backoff() -> None:
    policy = SupervisorConfig(flap_max_restarts=1000)
    sup = make(policy, ["store"])
    drv = Driver(sup)
    delays = exit_delays(sup, drv, "store", 4, run_for=0.0)
    assert delays[-1] >= 8 * 0.8
    now = sup.children["store"].start_at
    pid = drv.pid("store")
    # Heartbeats every interval, ticking the clock, for longer than healthy_after_s.
    steps = int(policy.healthy_after_s / policy.heartbeat_interval_s) + 2
    for i in range(1, steps + 1):
        t = now + i * policy.heartbeat_interval_s
        sup.heartbeat("store", pid, t)
        assert drv.tick(t) == []
    end = now + steps * policy.heartbeat_interval_s
    assert sup.children["store"].state is State.RUNNING
    assert sup.exited("store", 1, end) is State.BACKOFF
    delay = sup.children["store"].start_at - end
    assert policy.backoff_initial_s * 0.8 <= delay <= policy.backoff_initial_s * 1.2


def test_restarts_counts_each_restart() -> None:
    policy = SupervisorConfig(flap_max_restarts=1000)
    sup = make(policy, ["store"])
    drv = Driver(sup)
    now = T0
    drv.tick(now)
    assert sup.children["store"].restarts == 0
    for n in range(1, 7):
        now += 100.0
        sup.exited("store", 1, now)
        assert sup.children["store"].restarts == n - 1  # not before the start
        now = sup.children["store"].start_at
        drv.tick(now)
        assert sup.children["store"].restarts == n
        assert sup.children["store"].state is State.STARTING


def test_a_flapping_child_fails_and_the_others_carry_on() -> None:
    policy = SupervisorConfig()
    sup = make(policy)
    drv = Driver(sup)
    now = T0
    drv.tick(now)
    states = []
    for _ in range(policy.flap_max_restarts + 1):
        now += 0.1
        states.append(sup.exited("store", 1, now))
        sup.heartbeat("gossip", drv.pid("gossip"), now)
        if states[-1] is State.FAILED:
            break
        now = sup.children["store"].start_at
        sup.heartbeat("gossip", drv.pid("gossip"), now)
        assert ("start", "store") in kinds(drv.tick(now))
    assert now - T0 < policy.flap_window_s
    assert states == [State.BACKOFF] * policy.flap_max_restarts + [State.FAILED]
    store = sup.children["store"]
    assert store.pid is None
    assert "exited" in store.reason
    # Until its slow retry, with gossip heartbeating: the failed child is not started.
    gossip_pid = drv.pid("gossip")
    for i in range(1, int(policy.given_up_retry_s / 0.5)):
        t = now + i * 0.5
        sup.heartbeat("gossip", gossip_pid, t)
        assert drv.tick(t) == []
    assert store.state is State.FAILED
    assert sup.children["gossip"].state is State.RUNNING
    # The other child still gets restarted when it exits.
    t = now + 200.0
    assert sup.exited("gossip", 1, t) is State.BACKOFF
    assert kinds(drv.tick(sup.children["gossip"].start_at)) == [("start", "gossip")]
    assert store.state is State.FAILED


def give_up(sup: Supervision, drv: Driver, name: str) -> float:
    """Make ``name`` exit at once until it is given up; the time it was."""
    now = T0
    drv.tick(now)
    while True:
        now += 0.1
        if sup.exited(name, 1, now) is State.FAILED:
            return now
        now = sup.children[name].start_at
        drv.tick(now)


def test_a_given_up_child_is_tried_again_at_a_slow_pace() -> None:
    policy = SupervisorConfig(given_up_retry_s=300.0)
    sup = make(policy, ["store"])
    drv = Driver(sup)
    failed_at = give_up(sup, drv, "store")
    store = sup.children["store"]
    restarts = store.restarts
    assert store.since == failed_at and store.start_at == failed_at + 300.0
    assert drv.tick(failed_at + 299.9) == []
    assert kinds(drv.tick(failed_at + 300.0)) == [("start", "store")]
    assert store.state is State.STARTING and store.restarts == restarts + 1
    # The try fails too: given up again at once (no new burst of quick restarts).
    again = failed_at + 300.5
    assert sup.exited("store", 1, again) is State.FAILED
    assert store.start_at == again + 300.0 and store.reason == "a try exited with status 1"
    assert drv.tick(again + 299.9) == []
    assert kinds(drv.tick(again + 300.0)) == [("start", "store")]


def test_a_try_that_serves_but_dies_young_is_given_up_again() -> None:
    policy = SupervisorConfig()
    sup = make(policy, ["store"])
    drv = Driver(sup)
    failed_at = give_up(sup, drv, "store")
    start = failed_at + policy.given_up_retry_s
    drv.tick(start)
    assert sup.heartbeat("store", drv.pid("store"), start + 0.5) is True
    assert sup.children["store"].state is State.RUNNING  # serving: not failed while it runs
    early = start + policy.healthy_after_s - 1
    assert sup.exited("store", 1, early) is State.FAILED


def test_a_try_that_runs_healthy_ends_being_given_up() -> None:
    policy = SupervisorConfig()
    sup = make(policy, ["store"])
    drv = Driver(sup)
    failed_at = give_up(sup, drv, "store")
    start = failed_at + policy.given_up_retry_s
    drv.tick(start)
    sup.heartbeat("store", drv.pid("store"), start + 0.5)
    late = start + policy.healthy_after_s + 1
    sup.heartbeat("store", drv.pid("store"), late - 0.5)
    # A later crash is an ordinary one again: a short backoff, not a 5-minute wait.
    assert sup.exited("store", 1, late) is State.BACKOFF
    store = sup.children["store"]
    assert not store.given_up and store.start_at - late <= policy.backoff_initial_s * 1.2


def test_new_settings_give_a_given_up_child_a_clean_slate() -> None:
    sup = make(SupervisorConfig(), ["relay"])
    drv = Driver(sup)
    failed_at = give_up(sup, drv, "relay")
    assert sup.restart("relay", failed_at + 1) == []
    relay = sup.children["relay"]
    assert relay.state is State.BACKOFF and not relay.given_up and not relay.crashes
    assert kinds(drv.tick(failed_at + 1)) == [("start", "relay")]


def test_since_is_when_the_state_last_changed() -> None:
    sup = make(SupervisorConfig(), ["store"])
    drv = Driver(sup)
    drv.tick(T0)
    store = sup.children["store"]
    assert (store.state, store.since) == (State.STARTING, T0)
    sup.heartbeat("store", drv.pid("store"), T0 + 0.5)
    sup.heartbeat("store", drv.pid("store"), T0 + 1.5)
    assert (store.state, store.since) == (State.RUNNING, T0 + 0.5)
    sup.exited("store", 1, T0 + 2)
    assert (store.state, store.since) == (State.BACKOFF, T0 + 2)


def test_exits_spread_beyond_the_flap_window_never_fail() -> None:
    policy = SupervisorConfig()
    sup = make(policy, ["store"])
    drv = Driver(sup)
    now = T0
    drv.tick(now)
    for _ in range(4 * policy.flap_max_restarts):
        now += policy.flap_window_s + 1.0
        assert sup.exited("store", 1, now) is State.BACKOFF
        now = sup.children["store"].start_at
        assert kinds(drv.tick(now)) == [("start", "store")]


def test_heartbeat_with_a_wrong_pid_is_ignored() -> None:
    sup = make(names=["store"])
    drv = Driver(sup)
    drv.tick(T0)
    pid = drv.pid("store")
    assert sup.heartbeat("store", pid + 1, T0 + 1) is False
    assert sup.children["store"].state is State.STARTING
    assert sup.children["store"].last_heartbeat == T0
    assert sup.heartbeat("nosuch", pid, T0 + 1) is False
    # Still counted as silent: stopped once the grace is over.
    sup.heartbeat("store", pid + 1, T0 + STARTUP_GRACE_S)
    assert kinds(drv.tick(T0 + STARTUP_GRACE_S + 0.01)) == [("terminate", "store")]


def test_missed_heartbeats_terminate_then_kill() -> None:
    policy = SupervisorConfig()
    sup = make(policy)
    drv = Driver(sup)
    drv.tick(T0)
    pid = drv.pid("store")
    last = T0 + 1.0
    sup.heartbeat("store", pid, last)
    sup.heartbeat("gossip", drv.pid("gossip"), last)
    limit = policy.heartbeat_interval_s * policy.heartbeat_misses
    sup.heartbeat("gossip", drv.pid("gossip"), last + limit)
    assert drv.tick(last + limit) == []  # exactly at the limit: still fine
    actions = drv.tick(last + limit + 0.01)
    assert actions == [Action("terminate", "store", pid)]
    store = sup.children["store"]
    assert store.state is State.STOPPING
    assert "heartbeat" in store.reason
    terminated = last + limit + 0.01
    assert sup.heartbeat("store", pid, terminated + 0.5) is False  # too late
    before_kill = terminated + policy.stop_timeout_s - 0.01
    sup.heartbeat("gossip", drv.pid("gossip"), before_kill)
    assert drv.tick(before_kill) == []
    assert drv.tick(terminated + policy.stop_timeout_s) == [Action("kill", "store", pid)]
    assert sup.exited("store", -9, terminated + policy.stop_timeout_s + 0.1) is State.BACKOFF
    assert sup.children["gossip"].state is State.RUNNING


@pytest.mark.parametrize(
    "policy",
    [
        SupervisorConfig(),
        SupervisorConfig(heartbeat_interval_s=0.1, heartbeat_misses=1),
        SupervisorConfig(heartbeat_interval_s=5.0, heartbeat_misses=3),
    ],
)
def test_a_starting_child_gets_at_least_the_startup_grace(policy: SupervisorConfig) -> None:
    sup = make(policy, ["store"])
    drv = Driver(sup)
    drv.tick(T0)
    grace = max(STARTUP_GRACE_S, policy.heartbeat_interval_s * policy.heartbeat_misses)
    t = T0
    while t < T0 + grace - 0.05:
        t += 0.25
        assert drv.tick(min(t, T0 + grace)) == []
    assert sup.children["store"].state is State.STARTING
    assert kinds(drv.tick(T0 + grace + 0.01)) == [("terminate", "store")]


def test_shutdown_terminates_live_children_and_starts_nothing() -> None:
    policy = SupervisorConfig()
    sup = make(policy, ["store", "gossip", "relay", "ui"])
    drv = Driver(sup)
    drv.tick(T0)
    pids = {n: drv.pid(n) for n in ("store", "gossip", "relay", "ui")}
    sup.heartbeat("store", pids["store"], T0 + 0.5)
    sup.exited("relay", 1, T0 + 1.0)  # in backoff at shutdown
    actions = sup.shutdown(T0 + 1.5)
    assert sorted(actions, key=lambda a: a.name) == [
        Action("terminate", "gossip", pids["gossip"]),
        Action("terminate", "store", pids["store"]),
        Action("terminate", "ui", pids["ui"]),
    ]
    assert sup.children["relay"].state is State.STOPPED
    assert sup.heartbeat("store", pids["store"], T0 + 1.6) is False
    sup.exited("store", 0, T0 + 2.0)
    sup.exited("gossip", 0, T0 + 2.0)
    # ui ignores SIGTERM: killed after stop_timeout_s, never restarted.
    late = T0 + 1.5 + policy.stop_timeout_s
    assert drv.tick(late) == [Action("kill", "ui", pids["ui"])]
    sup.exited("ui", -9, late + 0.1)
    for i in range(1, 200):
        assert drv.tick(late + i * 1.0) == []
    assert {c.state for c in sup.children.values()} == {State.STOPPED}
    assert sup.alive() == []


def test_shutdown_leaves_a_failed_child_failed() -> None:
    policy = SupervisorConfig(flap_max_restarts=0)
    sup = make(policy, ["store", "gossip"])
    drv = Driver(sup)
    drv.tick(T0)
    assert sup.exited("store", 1, T0 + 0.1) is State.FAILED
    actions = sup.shutdown(T0 + 1)
    assert actions == [Action("terminate", "gossip", drv.pid("gossip"))]
    assert sup.children["store"].state is State.FAILED
    sup.exited("gossip", 0, T0 + 2)
    assert sup.children["gossip"].state is State.STOPPED
    assert drv.tick(T0 + 1000) == []
    assert sup.children["store"].state is State.FAILED


def test_supervision_of_a_child_that_comes_and_goes() -> None:
    sup = Supervision(["store"], SupervisorConfig(), None)
    sup.hold("relay", 1000.0)
    assert sup.children["relay"].state is State.WAITING
    assert [a.kind for a in sup.due(1000.0)] == ["start"]  # the store only
    sup.started("store", 10, 1000.0)
    assert sup.restart("relay", 1000.0) == []  # not running: starts at the next due
    assert [(a.kind, a.name) for a in sup.due(1000.0)] == [("start", "relay")]
    sup.started("relay", 11, 1000.0)
    sup.heartbeat("relay", 11, 1000.5)
    # A new URL: stopped on purpose, started again at once, counted as neither crash nor restart.
    assert [(a.kind, a.pid) for a in sup.restart("relay", 1001.0)] == [("terminate", 11)]
    assert sup.exited("relay", -15, 1001.2) is State.BACKOFF
    assert [(a.kind, a.name) for a in sup.due(1001.2)] == [("start", "relay")]
    sup.started("relay", 12, 1001.2)
    relay = sup.children["relay"]
    assert relay.restarts == 0 and not relay.crashes and relay.failures == 0
    # Turned off: stopped and forgotten; a heartbeat from the old pid changes nothing.
    assert [(a.kind, a.pid) for a in sup.drop("relay", 1002.0)] == [("terminate", 12)]
    assert sup.due(1002.1) == []
    assert sup.exited("relay", 0, 1002.2) is State.STOPPED
    assert "relay" not in sup.children
    assert not sup.heartbeat("relay", 12, 1002.3)
    assert sup.drop("relay", 1002.4) == []
    # Off, then on again before the old process has gone: it starts once that one exits.
    sup.restart("relay", 1003.0)
    sup.due(1003.0)
    sup.started("relay", 13, 1003.0)
    sup.drop("relay", 1003.1)
    assert sup.restart("relay", 1003.2) == []  # a terminate is on its way
    assert sup.exited("relay", 0, 1003.3) is State.BACKOFF
    assert [(a.kind, a.name) for a in sup.due(1003.3)] == [("start", "relay")]
