"""The relay server's configuration: flags, the ``--config`` file, budgets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from felund.relay.server.limits import NO_BUDGET, OFF, Budget, Budgets, Rate, TokenBuckets
from services.relay_server import _NOT_IN_CONFIG, build_parser, limits_of, parse_arguments

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "relay.toml"


def test_the_example_names_every_key_with_its_default() -> None:
    parser = build_parser()
    keys = {a.dest for a in parser._actions if a.dest not in _NOT_IN_CONFIG}
    text = EXAMPLE.read_text()
    named = set(re.findall(r"^#? ?([a-z_]+) = ", text, re.MULTILINE))
    assert named == keys
    args = parse_arguments(["--config", str(EXAMPLE), "--db", "x.db"])
    defaults = parse_arguments(["--db", "x.db"])
    assert vars(args) | {"config": None} == vars(defaults) | {"config": None}


def test_a_flag_wins_over_the_file_and_the_file_over_the_default(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        'key_messages = "10/20"\naddress_requests = "7"\ntrusted_proxy = ["10.0.0.0/8"]\n'
        "no_web = true\nport = 9000\n"
    )
    args = parse_arguments(["--config", str(config), "--db", "x", "--port", "9001"])
    assert (args.port, args.no_web) == (9001, True)
    assert args.key_messages == Rate(10, 20) and args.address_requests == Rate(7, 14)
    assert [str(n) for n in args.trusted_proxy] == ["10.0.0.0/8"]
    assert limits_of(args)["per_key"].messages == Rate(10, 20)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("nonsense = 1", "no such key 'nonsense'"),
        ("db = 'x.db'", "no such key 'db'"),
        ('key_messages = "fast"', "key_messages"),
        ('key_messages = "-1"', "key_messages"),
        ('trusted_proxy = "not an address"', "trusted_proxy"),
        ("no_web = 1", "no_web is true or false"),
        ("port = [1]", "port is one value"),
        ('log_level = "loud"', "log_level: one of"),
        ("port = ", "relay.toml"),
        ("retention_days = 0.00001", "retention_days: must be at least one second"),
        ("purge_interval = 0", "purge_interval: must be more than 0 seconds"),
    ],
)
def test_a_bad_file_stops_with_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, says: str
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(line + "\n")
    with pytest.raises(SystemExit) as exit_:
        parse_arguments(["--config", str(config), "--db", "x"])
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err


def test_retention_is_given_in_days() -> None:
    assert parse_arguments(["--db", "x"]).retention_days == 30
    args = parse_arguments(["--db", "x", "--retention-days", "7.5", "--purge-interval", "5"])
    assert (args.retention_days, args.purge_interval) == (7.5, 5)


def test_no_limits_turns_every_budget_off() -> None:
    limits = limits_of(parse_arguments(["--db", "x", "--no-limits", "--key-requests", "1/1"]))
    off = {"per_key": NO_BUDGET, "per_address": NO_BUDGET, "unverified": OFF, "web_files": OFF}
    assert limits == off


def test_rates_parse_and_print() -> None:
    assert Rate.parse("50/200") == Rate(50, 200)
    assert Rate.parse("5") == Rate(5, 10)
    assert Rate.parse("0") == OFF and str(OFF) == "0"
    assert str(Rate(50, 200)) == "50/200"
    for bad in ("", "x", "-1", "1/-1", "nan", "1/0.5"):
        with pytest.raises(ValueError):
            Rate.parse(bad)


def test_a_bucket_lets_one_large_cost_through_then_waits_for_its_debt() -> None:
    bucket = TokenBuckets(rate=10.0, burst=20.0)
    assert bucket.take("k", 0.0, 50) == 0.0  # more than the burst, from a full bucket
    assert bucket.level("k", 0.0) == -30.0
    assert bucket.take("k", 0.0) == pytest.approx(3.1)  # back to 1 token
    assert bucket.take("k", 3.1) == 0.0
    off = TokenBuckets(rate=0.0, burst=0.0)
    assert off.take("k", 0.0, 10**9) == 0.0 and len(off) == 0


def test_budgets_say_the_unit_short_and_spend_every_unit() -> None:
    budgets = Budgets(Budget(requests=Rate(100, 100), messages=Rate(10, 10), bytes=OFF))
    assert budgets.wait("a", 0.0, {"requests": 1, "messages": 10}) == (0.0, None)
    budgets.spend("a", 0.0, {"requests": 1, "messages": 10})
    wait, unit = budgets.wait("a", 0.0, {"requests": 1, "messages": 1})
    assert unit == "messages" and wait == pytest.approx(0.1)
    # Asking spent nothing.
    assert budgets.buckets["requests"].level("a", 0.0) == 99.0
