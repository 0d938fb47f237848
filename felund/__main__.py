"""``python -m felund``: the same as the ``felund`` command."""

from felund.cli import main

main()
