"""Layering, checked on the source: who may import whom.

- ``felund`` never imports ``services``;
- ``services.X`` never imports ``services.Y`` (``services/__init__`` aside);
- ``felund.protocol`` imports the standard library only.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path) -> str:
    """``felund/store/ops.py`` -> ``felund.store.ops``; ``services/__init__.py`` -> ``services``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a (possibly relative) from-import's module."""
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level - 1 >= len(base):
        return "." * level + (target or "")  # beyond the top: kept visibly relative
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([target] if target else [])])


def imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every module that ``source`` (the text of ``module``) imports, as absolute names.

    ``from P import n`` yields ``P`` and ``P.n`` (n may be a submodule).
    ``importlib.import_module("x")`` and ``__import__("x")`` with a literal count too.
    """
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            found.append(base)
            found.extend(f"{base}.{a.name}" if base else a.name for a in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = (
                func.attr if isinstance(func, ast.Attribute)
                else func.id if isinstance(func, ast.Name) else ""
            )  # fmt: skip
            arg = node.args[0]
            if (
                name in ("import_module", "__import__")
                and isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
            ):
                found.append(arg.value)
    return found


def _is_under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def felund_violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Imports of ``services`` by a module of felund."""
    found = imports(source, module, is_package)
    return [n for n in found if _is_under(n.lstrip("."), "services")]


def services_violations(source: str, module: str) -> list[str]:
    """Imports of another ``services.Y`` by ``services.X``."""
    own = module.split(".")[1]

    def foreign(name: str) -> bool:
        parts = name.split(".")
        if name.startswith("."):  # a relative import above the package
            return True
        return parts[0] == "services" and len(parts) > 1 and parts[1] != own

    return [n for n in imports(source, module) if foreign(n)]


def non_stdlib(source: str, module: str) -> list[str]:
    """Imports that are not of the standard library."""
    return [
        n for n in imports(source, module)
        if n.startswith(".") or n.split(".")[0] not in sys.stdlib_module_names
    ]  # fmt: skip


# --- the real modules -------------------------------------------------------------------------

FELUND = sources("felund")
SERVICES = [p for p in sources("services") if p.name != "__init__.py"]


def test_the_checker_sees_the_real_modules() -> None:
    names = {module_name(p) for p in FELUND}
    assert {"felund", "felund.protocol", "felund.store.ops", "felund.store.database"} <= names
    assert {"services.store", "services.supervisor"} <= {module_name(p) for p in SERVICES}
    store_imports = imports((ROOT / "services" / "store.py").read_text(), "services.store")
    assert "felund.store.ops" in store_imports
    assert "felund.store.ops.Ops" in store_imports


@pytest.mark.parametrize("path", FELUND, ids=module_name)
def test_felund_never_imports_services(path: Path) -> None:
    is_package = path.name == "__init__.py"
    assert felund_violations(path.read_text(), module_name(path), is_package) == []


@pytest.mark.parametrize("path", SERVICES, ids=module_name)
def test_a_service_never_imports_another(path: Path) -> None:
    assert services_violations(path.read_text(), module_name(path)) == []


def test_protocol_imports_only_the_standard_library() -> None:
    path = ROOT / "felund" / "protocol.py"
    found = imports(path.read_text(), "felund.protocol")
    assert found  # at least __future__ and typing: the check is not vacuous
    assert non_stdlib(path.read_text(), "felund.protocol") == []


# --- the checker itself -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "import services",
        "import services.store",
        "import services.store as s",
        "from services import store",
        "from services.store import StoreActor",
        "from ..services import store",
        "from .. import services",
        "def f():\n    from services.supervisor import main\n",
        "if TYPE_CHECKING:\n    import services.store\n",
        "import importlib\nimportlib.import_module('services.store')",
        "__import__('services')",
    ],
)
def test_checker_flags_felund_importing_services(source: str) -> None:
    assert felund_violations(source, "felund.errors") != []


@pytest.mark.parametrize(
    "source",
    [
        "import servicesx",
        "from felund import services_list",
        "from . import ops",
        "from .storage import Database",
        "x = 'services.store'",
    ],
)
def test_checker_allows_felund_imports(source: str) -> None:
    assert felund_violations(source, "felund.errors") == []


@pytest.mark.parametrize(
    "source",
    [
        "import services.store",
        "from services import store",
        "from services.store import StoreActor",
        "from . import store",
        "from .store import StoreActor",
        "from ..felund import x",
        "importlib.import_module('services.gossip')",
    ],
)
def test_checker_flags_a_service_importing_another(source: str) -> None:
    assert services_violations(source, "services.supervisor") != []


@pytest.mark.parametrize(
    "source",
    [
        "import services",
        "from services.supervisor import main",
        "from .supervisor import main",
        "from felund.actor.supervision import Supervision",
        "import zmq",
    ],
)
def test_checker_allows_a_service_its_own_imports(source: str) -> None:
    assert services_violations(source, "services.supervisor") == []


def test_checker_flags_non_stdlib_imports() -> None:
    assert non_stdlib("import msgpack", "felund.protocol") == ["msgpack"]
    assert non_stdlib("from felund import ids", "felund.protocol") != []
    assert non_stdlib("from . import ids", "felund.protocol") != []
    assert non_stdlib("import zmq.asyncio", "felund.protocol") == ["zmq.asyncio"]
    ok = "from __future__ import annotations\nimport os.path\nfrom typing import Final\n"
    assert non_stdlib(ok, "felund.protocol") == []


def test_relative_imports_resolve_from_the_package() -> None:
    assert "felund.store.ops" in imports("from . import ops", "felund.store.client")
    assert "felund.store.ops" in imports("from . import ops", "felund.store", is_package=True)
    db = imports("from .database import Database", "felund.store.ops")
    assert "felund.store.database.Database" in db
    assert "felund.x" in imports("from .. import x", "felund.sub.mod")
    # Above the top-level package: invalid, kept relative so the rules still see it.
    assert "..services.store" in imports("from ..services import store", "felund.errors")
