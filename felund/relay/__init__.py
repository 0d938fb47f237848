"""The relay: its wire protocol and auth (shared), the server, and the node's side.

The node's side is relay-sync's logic: ``sync`` (the process's loops) over
``client`` (signed HTTP), ``presence``, ``push``, ``pull`` and ``feed``, with the
sans-IO ``pullcursor`` and ``connectivity``; ``services.relay_sync`` runs it.
"""
