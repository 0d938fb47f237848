"""Modules loaded at their first use, not at their import (``importlib.util.LazyLoader``).

A ``felund`` command is a process of its own, and its start was mostly
imports it never used (structlog, prometheus-client): a module that names
one of them for a rare path imports it through ``module``, under
``TYPE_CHECKING`` the plain import, so the types and the layer rules still
see the real dependency.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any


class _Forward(ModuleType):
    """A module whose package is not imported either: imported, package and all, at the
    first read of an attribute, and every read forwarded to it (finding a module's
    spec imports its package, which is what waiting was for)."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attr)


def module(name: str) -> ModuleType:
    """``name``, imported already or loaded when an attribute of it is first read."""
    if name in sys.modules:
        return sys.modules[name]
    parent, _, child = name.rpartition(".")
    if parent and parent not in sys.modules:
        return _Forward(name)
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    loader.exec_module(mod)
    if parent:
        setattr(sys.modules[parent], child, mod)
    return mod


class _Deferred(ModuleType):
    """A module whose body has not run: the first read of a name it does not hold
    runs it, into this same module. A package's submodules import as usual first.

    Unlike ``LazyLoader``'s, an ``import`` statement of it does not run it: the
    import system reads ``__spec__``, which the module holds from the start. Like
    ``LazyLoader``'s, it is not for a module two threads may be the first to use.
    """

    def __getattr__(self, attr: str) -> Any:
        spec = self.__spec__
        assert spec is not None and spec.loader is not None  # set by deferred()
        name = f"{self.__name__}.{attr}"
        if spec.submodule_search_locations is not None and importlib.util.find_spec(name):
            return importlib.import_module(name)  # ``from package import submodule``
        self.__class__ = ModuleType  # type: ignore[assignment]  # as LazyLoader does
        spec.loader.exec_module(self)
        return getattr(self, attr)


def deferred(name: str) -> ModuleType:
    """Top-level module ``name``, imported already or with its body deferred.

    For what a library imports at its own import but a process never uses
    (``import name`` elsewhere then costs nothing), and for a package whose
    ``__init__`` imports far more than the submodules a process uses
    (``from package.sub import x`` loads ``package.sub`` alone).
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = None if "." in name else importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(name)
    mod = importlib.util.module_from_spec(spec)
    mod.__class__ = _Deferred
    sys.modules[name] = mod
    return mod


# What the node's own processes (supervisor, store, gossip) run without. They speak no
# TLS, and the few SHA-256s a message costs them the standard library's own code does
# nearly as fast (0.6 against 0.3 us): without ssl and _hashlib they never load the system
# OpenSSL, whose libcrypto is 3.7 MiB resident in each process that does (cryptography
# links its own copy, which the store and gossip load anyway). structlog imports greenlet
# where it is installed (the dev extras' playwright brings it), for a deprecated
# thread-local class no process here uses: 1.1 MiB each.
NODE_PROCESSES_WITHOUT = ("ssl", "_hashlib", "greenlet")


def unavailable(*names: str) -> None:
    """Make ``import name`` raise ImportError from now on, as in a Python built without it.

    For a library's optional import that a process does better without (a library
    falls back, as it does where the module is missing). A module imported already
    stays, what holds it uses it; a deferred one whose body has not run goes.
    """
    for name in names:
        held = sys.modules.get(name)
        if held is None or type(held) is _Deferred:
            sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not found"
