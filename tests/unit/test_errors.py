"""Every exception class of the product lives in felund/errors.py."""

from __future__ import annotations

import ast
from pathlib import Path

from felund import errors

ROOT = Path(__file__).resolve().parents[2]


def exception_classes(source: str) -> list[str]:
    """Classes whose base is named like an exception (``...Error``, ``...Exception``),
    or is one of felund's errors."""
    ours = {name for name, value in vars(errors).items() if isinstance(value, type)}
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                if name.endswith(("Error", "Exception")) or name in ours:
                    found.append(node.name)
    return found


def test_the_finder_sees_an_exception_class() -> None:
    assert exception_classes("class Oops(ValueError):\n    pass\n") == ["Oops"]
    assert exception_classes("class Down(RPCTimeout):\n    pass\n") == ["Down"]
    assert exception_classes("class Fine(Base):\n    pass\n") == []


def test_no_exception_class_outside_errors_py() -> None:
    outside = {
        f"{path.relative_to(ROOT)}: {name}"
        for package in ("felund", "services")
        for path in (ROOT / package).rglob("*.py")
        if path != ROOT / "felund" / "errors.py"
        for name in exception_classes(path.read_text())
    }
    assert outside == set()
