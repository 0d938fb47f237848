"""Bidirectional overrides in names and messages never reach a screen (CLI, curses ui)."""

from __future__ import annotations

from felund.protocol import on_screen
from felund.ui.text import fit

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "gpj.exe" would read "exe.jpg"


def test_every_bidi_formatting_character_is_dropped() -> None:
    controls = "".join(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
    assert on_screen(f"a{controls}b") == "ab"
    # Right-to-left text itself is kept: only the invisible formatting goes.
    assert on_screen("שלום مرحبا") == "שלום مرحبا"


def test_a_screen_line_of_the_ui_holds_no_override() -> None:
    line = fit([("mallory: ", "name"), (f"{RLO}gpj.exe", "text")], 40)
    shown = "".join(text for text, _ in line)
    assert RLO not in shown and "gpj.exe" in shown and len(shown) == 40
