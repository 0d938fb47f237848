"""The node's processes, one module each; ``supervisor`` starts the others.

A module here imports ``felund`` and never another module of ``services``.
"""
