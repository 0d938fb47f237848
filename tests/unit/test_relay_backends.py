"""Which store a relay's --db names, and how it is shown in logs (no password)."""

from __future__ import annotations

import pytest

from felund.relay.server.backends import database, describe, is_postgres


def test_a_url_is_postgresql_and_a_path_is_sqlite() -> None:
    assert is_postgres("postgresql://relay@db.example/felund")
    assert is_postgres("postgres://relay@/felund?host=/run/postgresql")
    assert not is_postgres("/var/lib/felund-relay/relay.db")
    assert not is_postgres("relay.db")


def test_the_environment_stands_in_for_a_missing_db(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FELUND_RELAY_DB", "postgresql://relay@/felund")
    assert database(None) == "postgresql://relay@/felund"
    assert database("/tmp/relay.db") == "/tmp/relay.db"  # --db wins
    monkeypatch.delenv("FELUND_RELAY_DB")
    assert database(None) == ""


def test_a_password_never_reaches_a_log_line() -> None:
    assert (
        describe("postgresql://relay:s3cret@db:5432/felund")
        == "postgresql://relay:***@db:5432/felund"
    )
    assert describe("postgresql://relay@db/felund") == "postgresql://relay@db/felund"
    assert describe("/srv/relay:x@y.db") == "/srv/relay:x@y.db"  # a path is shown as it is
