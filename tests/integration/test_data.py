"""Owning the data with real nodes: backup, restore, export, import, retention, lost circles."""

from __future__ import annotations

import json
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from felund.testing import Node, metric_value, wait_for, wire_message
from felund.v1 import ids

DAY = 86_400


def _node(make_node: Callable[..., Node], name: str, **env: str) -> Node:
    node = make_node(name, FELUND_GOSSIP_ROUND_INTERVAL_S="0.5", **env)
    node.cli("init", "--bind", "127.0.0.1", "--name", name)
    return node


def _texts(node: Node, circle_id: str) -> list[str]:
    return [m["text"] for m in node.json("inbox", "--circle-id", circle_id, "--limit", "100000")]


def _messages(node: Node) -> int:
    count: int = node.status()["messages"]
    return count


def _pair(make_node: Callable[..., Node], **a_env: str) -> tuple[Node, Node]:
    a, b = _node(make_node, "a", **a_env), _node(make_node, "b")
    a.circle_id = a.json("invite")["circle_id"]
    b.circle_id = b.cli(
        "join", "--code", a.cli("invite", "--circle-id", a.circle_id).stdout
    ).stdout.strip()
    return a, b


def test_backup_of_a_running_node_restores_the_same_node_which_syncs_on(
    make_node: Callable[..., Node], tmp_path: Path
) -> None:
    a, b = _pair(make_node)
    a.start()
    b.start()
    a.cli("send", "--circle-id", a.circle_id, "before the backup")
    wait_for(lambda: "before the backup" in _texts(b, b.circle_id), what="b to have it")
    backup = tmp_path / "a.felund-backup"
    done = a.cli("backup", str(backup))
    assert "1 circles" in done.stdout and str(backup) in done.stdout
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".a.felund-backup*"))  # no leftovers
    identity = json.loads((a.home / "identity.json").read_text())["node_id"]
    a.stop()  # the machine is lost

    b.cli("send", "--circle-id", b.circle_id, "while a was gone")
    # A new home on the old address (peers know it by that), nothing else in it.
    c = make_node("c", FELUND_GOSSIP_PORT=a.env["FELUND_GOSSIP_PORT"])
    restored = c.cli("restore", str(backup))
    assert identity in restored.stdout
    assert json.loads((c.home / "identity.json").read_text())["node_id"] == identity
    assert stat.S_IMODE((c.home / "felund.db").stat().st_mode) == 0o600
    c.start()
    assert c.status()["node_id"] == identity
    assert [x["circle_id"] for x in c.json("circles")] == [a.circle_id]
    wait_for(
        lambda: set(_texts(c, a.circle_id)) == {"before the backup", "while a was gone"},
        timeout=60,
        what="the restored node to sync on",
    )
    c.cli("send", "--circle-id", a.circle_id, "back")
    wait_for(lambda: "back" in _texts(b, b.circle_id), what="b to hear the restored node")

    # Only into a home that holds no node: never over one (running or not).
    running = b.cli("restore", str(backup), check=False)
    assert running.returncode != 0 and "uses this home" in running.stderr
    b.stop()
    refused = b.cli("restore", str(backup), check=False)
    assert refused.returncode != 0 and "restore into an empty FELUND_HOME" in refused.stderr


def test_export_streams_a_circle_and_import_adds_it_to_another_node(
    make_node: Callable[..., Node], tmp_path: Path
) -> None:
    a, b = _pair(make_node)
    lines = [f"line {i}" for i in range(2500)]
    a.cli("send", "--circle-id", a.circle_id, "--stdin", stdin="\n".join(lines).encode())
    a.cli("channel", "create", "--circle-id", a.circle_id, "ops", check=False)
    a.start()  # export reads beside a running store
    exported = a.cli("export", "--circle-id", a.circle_id).stdout.splitlines()
    records = [json.loads(x) for x in exported]
    texts = [r["text"] for r in records if r["channel_id"] == "general"]
    assert texts == lines
    assert all(r["wire"]["msg_id"] == r["msg_id"] and r["verified"] for r in records)
    txt = a.cli("export", "--circle-id", a.circle_id, "--format", "txt").stdout.splitlines()
    assert len(txt) == 2500 and txt[0].endswith("#general <a> line 0")
    a.stop()

    path = tmp_path / "a.jsonl"
    first = next(r for r in records if r["channel_id"] == "general")  # the inbox shows these
    tampered = json.loads(json.dumps(records[1]))  # another id on its ciphertext: forged
    tampered["wire"]["msg_id"] = tampered["msg_id"] = ids.new_msg_id(ids.new_node_id(), 1)
    other = {"wire": wire_message(ids.new_secret(), ids.new_node_id(), "elsewhere")}
    path.write_text("\n".join(json.dumps(r) for r in [*records, tampered, other]) + "\nnot json\n")
    b.start()  # import goes through the running store, which checks every message
    result = b.cli("import", "--circle-id", b.circle_id, str(path), check=False)
    assert result.returncode == 1, result  # something was refused: said, and the rest imported
    assert f"imported {len(records)} messages" in result.stderr
    assert "1 refused" in result.stderr and "1 of other circles" in result.stderr
    assert "1 unreadable" in result.stderr
    assert _texts(b, b.circle_id)[-1] == "line 2499"
    again = b.cli("import", "--circle-id", b.circle_id, str(path), check=False)
    assert f"imported 0 messages; {len(records)} already held" in again.stderr
    held = {m["msg_id"] for m in b.json("inbox", "--circle-id", b.circle_id, "--limit", "100000")}
    assert first["msg_id"] in held  # ids kept


def test_retention_prunes_old_messages_and_reconciliation_never_brings_them_back(
    make_node: Callable[..., Node], tmp_path: Path
) -> None:
    a, b = _pair(make_node, FELUND_STORE_RETAIN_DAYS="2")
    # A member's messages of ten days ago, held by both nodes.
    now = int(time.time())
    secret, author = _secret_of(a, a.circle_id), ids.new_node_id()
    old = [wire_message(secret, author, f"old {i}", ts=now - 10 * DAY + i) for i in range(300)]
    path = tmp_path / "old.jsonl"
    path.write_text("".join(json.dumps({"wire": w}) + "\n" for w in old))
    for n in (a, b):
        assert (
            "imported 300 messages" in n.cli("import", "--circle-id", a.circle_id, str(path)).stderr
        )
    a.start()
    b.start()
    wait_for(
        lambda: metric_value(a.metrics(), "felund_store_pruned_total") == 300,
        timeout=60,
        what="a to prune",
    )
    a.stop()
    a.start()  # gossip's index is rebuilt from the store: the pruned ids must be in it
    # Reconciliation runs (the path is live): what b writes while a was away reaches a.
    b.cli("send", "--circle-id", b.circle_id, "fresh")
    wait_for(lambda: "fresh" in _texts(a, a.circle_id), timeout=60, what="a to get b's message")
    a.cli("send", "--circle-id", a.circle_id, "from a")
    wait_for(lambda: "from a" in _texts(b, b.circle_id), timeout=60, what="b to get a's message")
    assert not [t for t in _texts(a, a.circle_id) if t.startswith("old ")]
    assert len([t for t in _texts(b, b.circle_id) if t.startswith("old ")]) == 300
    # Never fetched again: nothing came back to be stored or refused as held.
    text = a.metrics()
    assert (metric_value(text, "felund_store_duplicates_total") or 0) == 0
    assert (metric_value(text, "felund_store_appends_total", origin="gossip") or 0) == 1


def _secret_of(node: Node, circle_id: str) -> str:
    db = sqlite3.connect(node.home / "felund.db")
    try:
        row = db.execute("SELECT secret FROM circles WHERE circle_id = ?", (circle_id,)).fetchone()
        return str(row[0])
    finally:
        db.close()


def test_an_emptied_database_is_never_started_blank(
    make_node: Callable[..., Node], tmp_path: Path
) -> None:
    node = _node(make_node, "a")
    node.circle_id = node.json("invite")["circle_id"]
    node.cli("backup", str(tmp_path / "sunday.felund-backup"))
    for suffix in ("-wal", "-shm"):
        (node.home / f"felund.db{suffix}").unlink(missing_ok=True)
    (node.home / "felund.db").write_bytes(b"")
    for args in (("run",), ("circles",), ("send", "--circle-id", node.circle_id, "x")):
        result = node.cli(*args, check=False)
        assert result.returncode == 1, (args, result)
        assert "lost its circles" in result.stderr, result.stderr
        assert str(tmp_path / "sunday.felund-backup") in result.stderr
    # The way back that the message gives.
    node.cli("restore", str(tmp_path / "sunday.felund-backup"))
    assert [c["circle_id"] for c in node.json("circles")] == [node.circle_id]


@pytest.mark.parametrize("command", ["invite", "circles"])
def test_offline_commands_leave_private_files_whatever_the_umask(
    make_node: Callable[..., Node], command: str
) -> None:
    node = make_node("a")
    node.wrap = ["sh", "-c", 'umask 000 && exec "$@"', "sh"]
    node.cli("init", "--bind", "127.0.0.1")
    node.cli(command)
    made = [p for p in node.home.rglob("*") if p.is_file()]
    assert any(p.name == "felund.db" for p in made)
    loose = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in made if p.stat().st_mode & 0o077}
    assert not loose
