"""A node's configuration and identity, as every process loads them (commands too).

Apart from ``felund.actor.runtime`` so that a command loads no log or metric
machinery it does not use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

from felund import config as config_mod
from felund import home
from felund.trust.identity import IdentityKey

# Bench only (bench/gossip.py): the node writes unsigned, to time signing against none.
BENCH_UNSIGNED = "FELUND_BENCH_UNSIGNED"


class Context(NamedTuple):
    """A node's configuration and identity, as every process loads them."""

    config: config_mod.Config
    layout: home.Layout
    node_id: str
    # None: this node writes unsigned (the bench's FELUND_BENCH_UNSIGNED, read here
    # only: never for a real node).
    identity: home.Identity | None = None

    @property
    def key(self) -> IdentityKey | None:
        """The key this node signs with; None: it writes unsigned (an older id with the
        derived mark, or the bench's). Asked by what signs, never by a command's start:
        telling needs the key itself, and so cryptography."""
        return self.identity.key if self.identity is not None and self.identity.signs else None


def load_context(environ: Mapping[str, str] | None = None) -> Context:
    """Load config, layout and identity of the node at ``$FELUND_HOME``."""
    env = os.environ if environ is None else environ
    root = home.home_from_env(dict(env))
    cfg = config_mod.load(root, environ)
    lay = home.layout(root, cfg)
    home.prepare(lay)
    ident = home.load_identity(lay)
    return Context(cfg, lay, ident.node_id, None if env.get(BENCH_UNSIGNED) else ident)
