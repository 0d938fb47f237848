"""Layering, checked on the source: who may import whom.

Every import counts: at the top, inside functions, under ``TYPE_CHECKING``,
and ``importlib.import_module``/``__import__`` of a literal name.

- Layers, each importing only its own and lower ones: formats (``felund.v1``, ``felund.trust``,
  ``felund.epochs``, ``felund.protocol``, ``felund.errors``) < base (``config``, ``files``,
  ``home``, ``logs``, ``metrics``, ``metric_files``, ``netaddr``) < ``bus`` < ``actor`` <
  ``store`` / ``gossip`` / ``relay`` (each on its own: none imports another) < ``ui`` /
  ``cli`` (each on its own) < ``felund.testing``, ``felund.__main__`` and the
  package ``felund`` itself (anything of felund). A new package of felund
  gets a layer here before it can pass.
- ``felund`` imports nothing of ``services``, ``tests`` or ``bench``; a
  service imports felund (never ``felund.testing``), never another service.
- The relay server (``felund.relay.server``, ``services.relay_server``) never
  reaches the bus (``felund.bus``, zmq) or the node's store (``felund.store``),
  not even through another module.
- Sans-IO modules, and every module of felund they reach, import no zmq,
  asyncio, aiohttp, socket, selectors or curses.
- No import cycle anywhere in felund (type-only imports included).
- ``felund.protocol`` imports the standard library only.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
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


class Graph:
    """Modules (name -> source) and who imports whom among them."""

    def __init__(self, modules: Mapping[str, str], packages: Iterable[str] = ()) -> None:
        self.packages = set(packages)  # names of modules that are a package's __init__
        self.names = {
            m: imports(src, m, m in self.packages) for m, src in modules.items()
        }  # fmt: skip

    @classmethod
    def of_tree(cls, *tops: str) -> Graph:
        paths = [p for top in tops for p in sources(top)]
        return cls(
            {module_name(p): p.read_text() for p in paths},
            {module_name(p) for p in paths if p.name == "__init__.py"},
        )

    def edges(self, module: str) -> set[str]:
        """The modules of this graph that ``module`` imports."""
        return {n for n in self.names[module] if n in self.names and n != module}

    def reach(self, module: str) -> set[str]:
        """``module`` and every module of this graph it imports, directly or not."""
        seen, todo = {module}, [module]
        while todo:
            for n in self.edges(todo.pop()) - seen:
                seen.add(n)
                todo.append(n)
        return seen

    def cycles(self) -> list[list[str]]:
        """Every set of modules that import each other in a loop (Tarjan's SCCs)."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        found: list[list[str]] = []

        def visit(v: str) -> None:  # recursion depth: at most the number of modules
            index[v] = low[v] = len(index)
            stack.append(v)
            for w in sorted(self.edges(v)):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                scc = []
                while True:
                    w = stack.pop()
                    scc.append(w)
                    if w == v:
                        break
                if len(scc) > 1:
                    found.append(sorted(scc))

        for v in sorted(self.names):
            if v not in index:
                visit(v)
        return found


# --- the rules --------------------------------------------------------------------------------

# (layer, its units (felund.<unit>), whether its units stay apart)
LAYERS: tuple[tuple[str, frozenset[str], bool], ...] = (
    ("formats", frozenset({"v1", "trust", "protocol", "errors", "epochs", "lazy"}), False),
    (
        "base",
        frozenset({"config", "files", "home", "logs", "metrics", "metric_files", "netaddr"}),
        False,
    ),
    ("bus", frozenset({"bus"}), False),
    ("actor", frozenset({"actor"}), False),
    ("subsystems", frozenset({"store", "gossip", "relay"}), True),
    ("front ends", frozenset({"ui", "cli"}), True),
    ("tools", frozenset({"", "testing", "__main__"}), False),  # "": the package felund
)
SANS_IO = (
    "felund.v1",  # and every module under it
    "felund.trust",
    "felund.gossip.reconcile",
    "felund.gossip.native_frames",
    "felund.gossip.v1_frames",
    "felund.bus.envelope",
    "felund.bus.zmtp",
    "felund.relay.protocol",
    "felund.actor.supervision",
    "felund.actor.backoff",
    "felund.actor.http_page",
    "felund.actor.exposition",
    "felund.ui.model",  # its parts are what it reaches
    "felund.ui.render",
)
IO = frozenset({"zmq", "asyncio", "aiohttp", "socket", "selectors", "curses"})
RELAY_SERVER = ("felund.relay.server", "services.relay_server")
NOT_FOR_THE_RELAY_SERVER = ("felund.bus", "felund.store", "zmq")


def unit(module: str) -> str:
    """``felund.gossip.handshake`` -> ``gossip``; ``felund`` -> ``""``."""
    return module.split(".")[1] if "." in module else ""


def layer(module: str) -> int | None:
    """The index in LAYERS of a felund module's layer; None if it has none."""
    for i, (_, units, _) in enumerate(LAYERS):
        if unit(module) in units:
            return i
    return None


def layer_violations(graph: Graph, module: str) -> list[str]:
    """Imports by a felund module of a higher layer, or of another unit of a layer kept apart."""
    mine = layer(module)
    if mine is None:
        return [f"{module} is in no layer"]
    bad = []
    for name in sorted(graph.edges(module)):
        if not _is_under(name, "felund") or _is_under(module, name):  # its own packages
            continue
        theirs = layer(name)
        apart = LAYERS[mine][2] and unit(name) != unit(module)
        if theirs is None or theirs > mine or (theirs == mine and apart):
            bad.append(name)
    return bad


def felund_violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Imports by a module of felund of what is not felund: services, tests, bench."""
    found = imports(source, module, is_package)
    return [n for n in found if any(_is_under(n.lstrip("."), p) for p in OUTSIDE)]


OUTSIDE = ("services", "tests", "bench")


def services_violations(source: str, module: str) -> list[str]:
    """Imports by ``services.X`` of another ``services.Y``, of tests or bench, or of
    felund's test helpers."""
    own = module.split(".")[1]

    def foreign(name: str) -> bool:
        parts = name.split(".")
        if name.startswith("."):  # a relative import above the package
            return True
        if parts[0] in ("tests", "bench") or _is_under(name, "felund.testing"):
            return True
        return parts[0] == "services" and len(parts) > 1 and parts[1] != own

    return [n for n in imports(source, module) if foreign(n)]


def reached(graph: Graph, module: str, banned: Iterable[str]) -> list[str]:
    """``module:name`` for each import of a ``banned`` name by ``module`` or a module it reaches."""
    banned = tuple(banned)
    return [
        f"{m}:{n}"
        for m in sorted(graph.reach(module))
        for n in graph.names[m]
        if any(_is_under(n, b) for b in banned)
    ]


def io_violations(graph: Graph, module: str) -> list[str]:
    """IO imported by a sans-IO module or by what it reaches."""
    return reached(graph, module, IO)


def relay_server_violations(graph: Graph, module: str) -> list[str]:
    """The bus or the node's store reached by a module of the relay server."""
    return reached(graph, module, NOT_FOR_THE_RELAY_SERVER)


def non_stdlib(source: str, module: str) -> list[str]:
    """Imports that are not of the standard library."""
    return [
        n for n in imports(source, module)
        if n.startswith(".") or n.split(".")[0] not in sys.stdlib_module_names
    ]  # fmt: skip


# --- the real modules -------------------------------------------------------------------------

FELUND = sources("felund")
SERVICES = [p for p in sources("services") if p.name != "__init__.py"]
GRAPH = Graph.of_tree("felund", "services")
FELUND_MODULES = sorted(m for m in GRAPH.names if _is_under(m, "felund"))


def _matching(prefixes: Iterable[str]) -> list[str]:
    return sorted(m for m in GRAPH.names if any(_is_under(m, p) for p in prefixes))


def test_the_checker_sees_the_real_modules() -> None:
    names = {module_name(p) for p in FELUND}
    assert {"felund", "felund.protocol", "felund.store.ops", "felund.store.database"} <= names
    assert {"services.store", "services.supervisor"} <= {module_name(p) for p in SERVICES}
    store_imports = imports((ROOT / "services" / "store.py").read_text(), "services.store")
    assert "felund.store.ops" in store_imports
    assert "felund.store.ops.Ops" in store_imports
    assert "felund.store.ops" in GRAPH.edges("services.store")
    assert "felund.bus.envelope" in GRAPH.reach("felund.store.client")  # through bus.dealer
    for prefixes in (SANS_IO, RELAY_SERVER):  # every name listed is a real module
        for p in prefixes:
            assert _matching([p]), p


@pytest.mark.parametrize("path", FELUND, ids=module_name)
def test_felund_imports_nothing_outside_it(path: Path) -> None:
    is_package = path.name == "__init__.py"
    assert felund_violations(path.read_text(), module_name(path), is_package) == []


@pytest.mark.parametrize("path", SERVICES, ids=module_name)
def test_a_service_imports_felund_never_another_service(path: Path) -> None:
    assert services_violations(path.read_text(), module_name(path)) == []


@pytest.mark.parametrize("module", FELUND_MODULES)
def test_a_module_imports_only_its_layer_and_lower(module: str) -> None:
    assert layer_violations(GRAPH, module) == []


@pytest.mark.parametrize("module", _matching(RELAY_SERVER))
def test_the_relay_server_never_reaches_the_bus_or_the_node_store(module: str) -> None:
    assert relay_server_violations(GRAPH, module) == []


@pytest.mark.parametrize("module", _matching(SANS_IO))
def test_sans_io_modules_reach_no_io(module: str) -> None:
    assert io_violations(GRAPH, module) == []


def test_no_import_cycle() -> None:
    assert GRAPH.cycles() == []


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
        "from tests.v1peer import V1Peer",
        "import bench.gossip",
    ],
)
def test_checker_flags_felund_importing_outside_it(source: str) -> None:
    assert felund_violations(source, "felund.errors") != []


@pytest.mark.parametrize(
    "source",
    [
        "import servicesx",
        "from felund import services_list",
        "from . import ops",
        "from .storage import Database",
        "x = 'services.store'",
        "import testsuite",
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
        "from felund.testing import Node",
        "from felund import testing",
        "from tests.unit import ui_store",
        "import bench",
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


def _graph(**modules: str) -> Graph:
    """A graph of made-up modules: ``felund__bus__sockets="..."`` is ``felund.bus.sockets``."""
    return Graph({name.replace("__", "."): src for name, src in modules.items()})


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("felund.v1.ids", "felund.config"),  # formats < base
        ("felund.protocol", "felund.bus.sockets"),
        ("felund.config", "felund.bus.sockets"),  # base < bus
        ("felund.bus.sockets", "felund.actor.runtime"),  # bus < actor
        ("felund.actor.runtime", "felund.store.client"),  # actor < store
        ("felund.store.ops", "felund.gossip.reconcile"),  # subsystems stay apart
        ("felund.gossip.host", "felund.relay.client"),
        ("felund.relay.client", "felund.ui.model"),  # subsystems < front ends
        ("felund.ui.calls", "felund.cli.common"),  # front ends stay apart
        ("felund.cli.main", "felund.testing"),  # nothing below imports the tools
        ("felund.store.ops", "felund.newthing"),  # a package with no layer
    ],
)
def test_checker_flags_an_import_up_or_across(importer: str, imported: str) -> None:
    graph = Graph({importer: f"from {imported} import x\n", imported: ""})
    assert layer_violations(graph, importer) == [imported]
    type_only = f"if TYPE_CHECKING:\n    import {imported}\n"
    assert layer_violations(Graph({importer: type_only, imported: ""}), importer) == [imported]


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("felund.v1.wire", "felund.protocol"),  # own layer (formats)
        ("felund.home", "felund.config"),  # own layer (base)
        ("felund.bus.sockets", "felund.config"),
        ("felund.store.client", "felund.actor.runtime"),
        ("felund.relay.server.app", "felund.relay.protocol"),  # own unit
        ("felund.ui.view", "felund.ui"),  # its own package
        ("felund.cli.main", "felund.store.client"),
        ("felund.testing", "felund.cli.main"),  # the tools take anything
        ("felund", "felund.ui.model"),
    ],
)
def test_checker_allows_an_import_down(importer: str, imported: str) -> None:
    graph = Graph({importer: f"import {imported}\n", imported: ""})
    assert layer_violations(graph, importer) == []


def test_checker_flags_a_module_in_no_layer() -> None:
    assert layer_violations(Graph({"felund.newthing": ""}), "felund.newthing") != []


def test_checker_flags_the_relay_server_reaching_the_bus_or_the_store() -> None:
    direct = _graph(felund__relay__server__app="from felund.store import database\n")
    assert relay_server_violations(direct, "felund.relay.server.app") != []
    through = _graph(
        felund__relay__server__app="from felund.relay import helper\n",
        felund__relay__helper="from felund.actor import runtime\n",
        felund__actor__runtime="from felund.bus.sockets import Bus\n",
    )
    assert relay_server_violations(through, "felund.relay.server.app") == [
        "felund.actor.runtime:felund.bus.sockets",
        "felund.actor.runtime:felund.bus.sockets.Bus",
    ]
    zmq = _graph(services__relay_server="import zmq\n")
    assert relay_server_violations(zmq, "services.relay_server") == ["services.relay_server:zmq"]
    clean = _graph(felund__relay__server__app="from felund.relay.protocol import X\nimport aiohttp")
    assert relay_server_violations(clean, "felund.relay.server.app") == []


@pytest.mark.parametrize(
    "source",
    [
        "import zmq",
        "import zmq.asyncio",
        "import asyncio",
        "from aiohttp import web",
        "import socket",
        "def f():\n    import curses\n",
        "if TYPE_CHECKING:\n    from asyncio import Queue\n",
    ],
)
def test_checker_flags_io_in_a_sans_io_module(source: str) -> None:
    assert io_violations(_graph(felund__gossip__reconcile=source), "felund.gossip.reconcile")
    # ... and in a module it reaches.
    reaching = _graph(
        felund__ui__model="from felund.ui import keys\n",
        felund__ui__keys="from felund.ui.view import View\n",
        felund__ui__view=source,
    )
    assert io_violations(reaching, "felund.ui.model") != []


def test_checker_allows_a_sans_io_module_its_pure_imports() -> None:
    graph = _graph(
        felund__ui__model="import json\nimport time\nfrom felund.ui import view\n",
        felund__ui__view="from felund.protocol import OP_POST\nimport msgpack\n",
        felund__protocol="from typing import Final\n",
        felund__ui__calls="import zmq\n",  # not reached from the model
    )
    assert io_violations(graph, "felund.ui.model") == []


@pytest.mark.parametrize(
    ("modules", "cycle"),
    [
        ({"a": "import b", "b": "import a"}, ["a", "b"]),
        ({"a": "from b import x", "b": "if TYPE_CHECKING:\n    from a import Y"}, ["a", "b"]),
        ({"a": "import b", "b": "import c", "c": "def f():\n    import a\n"}, ["a", "b", "c"]),
        ({"p.a": "from p import b", "p.b": "from . import a", "p": ""}, ["p.a", "p.b"]),
    ],
)
def test_checker_finds_a_cycle(modules: dict[str, str], cycle: list[str]) -> None:
    graph = Graph(modules, packages={"p"})
    assert graph.cycles() == [cycle]


def test_checker_sees_no_cycle_in_a_tree() -> None:
    graph = Graph({"a": "import b\nimport c", "b": "import c", "c": "import json", "p": "import a"})
    assert graph.cycles() == []


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
