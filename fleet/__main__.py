"""Entry point for ``python -m fleet``."""

from fleet.cli import main

main()
