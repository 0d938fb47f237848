"""``python -m felund``: the same as the ``felund`` command."""

from felund.cli.main import main

main()
