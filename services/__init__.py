"""The node's processes, one module each; ``supervisor`` starts the others, but
``ui`` (started by a person, any number) and ``relay_server`` (a separate deployable).

A module here imports ``felund`` and never another module of ``services``.
"""
