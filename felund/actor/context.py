"""A node's configuration and identity, as every process loads them (commands too).

Apart from ``felund.actor.runtime`` so that a command loads no log or metric
machinery it does not use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from felund import config as config_mod
from felund import home
from felund.trust.identity import IdentityKey

# Bench only (bench/gossip.py): the node writes unsigned, to time signing against none.
BENCH_UNSIGNED = "FELUND_BENCH_UNSIGNED"


@dataclass(frozen=True, slots=True)
class Context:
    """A node's configuration and identity, as every process loads them."""

    config: config_mod.Config
    layout: home.Layout
    node_id: str
    # None: this node writes unsigned (an older id with the derived mark, or the bench's
    # FELUND_BENCH_UNSIGNED, read here only: never for a real node).
    key: IdentityKey | None = None


def load_context(environ: Mapping[str, str] | None = None) -> Context:
    """Load config, layout and identity of the node at ``$FELUND_HOME``."""
    env = os.environ if environ is None else environ
    root = home.home_from_env(dict(env))
    cfg = config_mod.load(root, environ)
    lay = home.layout(root, cfg)
    home.prepare(lay)
    ident = home.load_identity(lay)
    unsigned = not ident.signs or bool(env.get(BENCH_UNSIGNED))
    return Context(cfg, lay, ident.node_id, None if unsigned else ident.key)
