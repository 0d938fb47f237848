"""What a node costs the machine it runs on: idle disk writes, memory, CLI wall time.

``python -m bench.footprint [--memory] [BASE_REPO]`` prints the rows for this
checkout and, given another checkout (with its own ``.venv``), for that one
beside it, nodes of both running at once so that both columns meet the same
machine. ``--memory``: the memory rows only (no idle window, no commands).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench import Row, print_table
from felund.testing import Node, free_port
from felund.testing.procstat import cpu_ticks, pss_kib, rss_kib, write_bytes

IDLE_S = 60.0
REST_CPU = 0.02  # of a core, per process: below it over a whole second, a node is at rest
REST_TIMEOUT_S = 120.0
CLI_RUNS = 21
SMALL, LARGE = 10_000, 100_000
STORED = "messages of ~15 bytes in one circle, sent by `felund send --stdin`"


@contextmanager
def _node(home: Path, repo: Path | None) -> Iterator[Node]:
    """A started node with one circle, running ``repo``'s felund (default: this one)."""
    node = Node(home, FELUND_GOSSIP_PORT=str(free_port()))
    if repo is not None:
        node.felund, node.repo = [str(repo / ".venv/bin/python"), "-m", "felund"], repo
    _compile(node)
    node.cli("init", "--name", "bench", "--bind", "127.0.0.1")
    node.start()
    node.circle_id = node.json("invite")["circle_id"]
    try:
        yield node
    finally:
        node.stop()


def _compile(node: Node) -> None:
    """Write the checkout's bytecode, as installing it does: with PYTHONDONTWRITEBYTECODE
    set (as here) every command would compile each of its modules at every start."""
    python = node.felund[0]
    subprocess.run(
        [python, "-m", "compileall", "-q", "felund", "services"],
        cwd=node.repo,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _send(node: Node, count: int) -> None:
    lines = "".join(f"footprint line {i}\n" for i in range(count)).encode()
    node.cli("send", "--circle-id", node.circle_id, "--stdin", stdin=lines, timeout=600)


def idle_write_kib(nodes: list[Node], seconds: float) -> list[float]:
    """KiB written to block devices by all processes of each node, idle, over ``seconds``."""
    pids = [n.pids() for n in nodes]
    os.sync()  # a page counts when it becomes dirty: start from clean ones
    before = [sum(write_bytes(p) for p in ps) for ps in pids]
    time.sleep(seconds)  # the measurement window, not a wait for anything
    after = [sum(write_bytes(p) for p in ps) for ps in pids]
    return [(a - b) / 1024 for a, b in zip(after, before, strict=True)]


def at_rest(nodes: list[Node]) -> None:
    """Wait until no process of any node used REST_CPU over two seconds in a row.

    Memory is read at rest: what a node holds with N messages stored, not the
    buffers of the burst that stored them (a process trims its heap once idle).
    """
    hz = os.sysconf("SC_CLK_TCK")
    pids = [p for n in nodes for p in n.pids()]
    deadline, calm = time.monotonic() + REST_TIMEOUT_S, 0
    while calm < 2:
        if time.monotonic() > deadline:
            raise TimeoutError(f"nodes still busy after {REST_TIMEOUT_S:g} s")
        before = [cpu_ticks(p) for p in pids]
        time.sleep(1.0)  # the measurement window of this check
        busy = max(cpu_ticks(p) - b for p, b in zip(pids, before, strict=True))
        calm = calm + 1 if busy <= REST_CPU * hz else 0


def memory_mib(node: Node) -> tuple[float, float, int, str]:
    """Whole-node (RSS, PSS) in MiB, the number of processes, and RSS per process."""
    sup = node.supervisor()
    named = {"supervisor": sup["pid"], **{n: s["pid"] for n, s in sup["services"].items()}}
    rss = {name: rss_kib(pid) / 1024 for name, pid in named.items() if pid}
    pss = sum(pss_kib(pid) for pid in named.values() if pid) / 1024
    each = " + ".join(f"{name} {mib:.0f}" for name, mib in rss.items())
    return sum(rss.values()), pss, len(rss), each


def cli_p50_ms(nodes: list[Node], command: str) -> list[tuple[float, float]]:
    """Per node, the median (wall, CPU) ms of one `felund COMMAND` against it.

    The nodes take turns run by run, so that a change of the machine's load
    meets every column alike; CPU time (user + system) is the load-proof figure.
    """
    runs: list[list[tuple[float, float]]] = [[] for _ in nodes]
    for _ in range(CLI_RUNS):
        for node, mine in zip(nodes, runs, strict=True):
            cpu0, t0 = _children_cpu(), time.perf_counter()
            _COMMANDS[command](node)
            mine.append((time.perf_counter() - t0, _children_cpu() - cpu0))
    return [
        (statistics.median(w for w, _ in r) * 1000, statistics.median(c for _, c in r) * 1000)
        for r in runs
    ]


_COMMANDS: dict[str, Callable[[Node], object]] = {
    "send": lambda n: n.cli("send", "--circle-id", n.circle_id, "one line"),
    "inbox": lambda n: n.cli("inbox", "--circle-id", n.circle_id, "--limit", "20"),
    "status": lambda n: n.cli("status"),
    # The floor under them: the same interpreter and venv (its .pth files) doing nothing.
    "python -c pass": lambda n: subprocess.run(
        [n.felund[0], "-c", "pass"], env=n.env, cwd=n.repo, check=True
    ),
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(base: Path | None = None, memory_only: bool = False) -> list[Row]:
    """The footprint rows, with ``base``'s figure beside each when given."""
    repos: list[Path | None] = [None] if base is None else [None, base]
    cols: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="felund-bench-") as tmp, ExitStack() as stack:
        nodes = [stack.enter_context(_node(Path(tmp) / f"n{i}", r)) for i, r in enumerate(repos)]
        if not memory_only:
            cols["idle"] = [f"{kib:,.0f} KiB" for kib in idle_write_kib(nodes, IDLE_S)]
        for node in nodes:
            _send(node, SMALL)
        if not memory_only:
            per_command = [cli_p50_ms(nodes, c) for c in ("send", "inbox", "status")]
            floor = cli_p50_ms(nodes, "python -c pass")
            cols["cli"] = [
                " / ".join(f"{cmd[i][0]:.0f}" for cmd in per_command)
                + " ms (CPU "
                + " / ".join(f"{cmd[i][1]:.0f}" for cmd in per_command)
                + " ms)"
                for i in range(len(nodes))
            ]
            cols["floor"] = [f"{wall:.0f} ms (CPU {cpu:.0f} ms)" for wall, cpu in floor]
        at_rest(nodes)
        small = [memory_mib(n) for n in nodes]
        for node in nodes:
            _send(node, LARGE - SMALL)
        at_rest(nodes)
        large = [memory_mib(n) for n in nodes]
        procs = small[0][2]
    both = base is not None

    def row(name: str, values: list[str], notes: str) -> Row:
        return (name, values[0], notes + (f"; before ({base}): {values[1]}" if both else ""))

    memory = [
        row(
            f"whole-node RSS with {SMALL:,} messages",
            [f"{m[0]:.0f} MiB ({m[3]})" for m in small],
            f"{procs} processes at rest, {SMALL:,} {STORED}; issue 20: 125 MiB before, theirs 24",
        ),
        row(
            f"whole-node PSS with {LARGE:,} messages",
            [f"{m[1]:.0f} MiB (RSS {m[0]:.0f}: {m[3]})" for m in large],
            f"{procs} processes at rest, {LARGE:,} {STORED}; issue 20: 111 MiB before",
        ),
    ]
    if memory_only:
        return memory
    return [
        row(
            f"idle writes of a node to disk over {IDLE_S:g} s",
            cols["idle"],
            f"write_bytes of all {procs} processes (/proc/PID/io), after a sync; "
            "issue 20: 76 KiB/min before",
        ),
        *memory,
        row(
            "felund send / inbox / status, wall p50",
            cols["cli"],
            f"{CLI_RUNS} runs each, taking turns with the other column, against a running "
            f"node with {SMALL:,} messages; the floor, `python -c pass` in the same venv: "
            f"{cols['floor'][0]}; issue 20: send ~180 ms before, target 60 ms",
        ),
    ]


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--memory"]
    print_table(main(Path(args[0]).resolve() if args else None, "--memory" in sys.argv))
