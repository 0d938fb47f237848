"""Benchmarks: `make bench` (``python -m bench``) prints a table of figures."""

from __future__ import annotations

Row = tuple[str, str, str]  # benchmark, result, notes


def print_table(rows: list[Row]) -> None:
    """The rows as the README's markdown table."""
    width = max(len(r[0]) for r in rows)
    print(f"| {'benchmark':<{width}} | result | notes |")
    print(f"|{'-' * (width + 2)}|---|---|")
    for name, value, notes in rows:
        print(f"| {name:<{width}} | {value} | {notes} |")
