"""``python -m nitrotls``: the same as the ``nitrotls`` console script."""

from nitrotls.cli import main

main()
