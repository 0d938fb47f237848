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
