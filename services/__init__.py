"""The node's processes, one module each; ``supervisor`` starts the others, but
``ui`` (started by a person, any number) and ``relay_server`` (a separate deployable).

A module here imports ``felund`` and never another module of ``services``.
"""

from felund import lazy

# Modules a library imports at its own import for what no service here uses: each
# loads at its first real use. structlog names asyncio for logging methods we never
# await (the supervisor and the store run no event loop); http.client and
# urllib.request name ssl for https; prometheus_client's __init__ imports its HTTP
# exposition, which no process here uses (the children use its metric classes and
# files; the supervisor serves /metrics with felund.actor.metrics_http).
# Measured: 3-8 MiB of each process's memory.
lazy.deferred("asyncio")
lazy.deferred("ssl")
lazy.deferred("prometheus_client")
