"""Who said it: identity keys, per-author signatures and the owner's proof (sans-IO).

A formats-level package like ``felund.v1``: pure functions over bytes and
strings, shared by the node, the store and the tests; the browser computes
the same bytes (``felund/web/lib/trust.js``), held by the vectors in
``tests/vectors/felund-trust-v1.json``.
"""
