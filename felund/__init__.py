"""felund: peer-to-peer group chat for small private circles.

The library of the node: wire formats (``ids``, ``invite``, ``crypto``,
``wire``), the bus (``protocol``, ``envelope``, ``bus``, ``catchup``), the
model and its storage (``storage``, ``ops``), configuration (``config``,
``home``), and the shared machinery of processes (``service``, ``logs``,
``metrics``, ``supervision``). It never imports ``services``.
"""

__version__ = "0.1.0"
