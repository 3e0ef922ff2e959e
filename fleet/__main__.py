"""The ``fleet`` command (also ``python -m fleet``): a plain ``fleet exec`` runs before the
CLI framework loads (fleet/exec_command.py says why); everything else goes to fleet.cli."""

import sys

from fleet import exec_command
from fleet.errors import FleetError


def main() -> None:
    """Run ``fleet`` with ``sys.argv``; exit with its status."""
    try:
        status = exec_command.main(sys.argv[1:])
    except FleetError as exc:
        from fleet.cli import report_error  # the CLI framework, for an error only

        report_error(exc)
    except KeyboardInterrupt:
        sys.exit(130)
    if status is None:
        from fleet.cli import main as cli_main

        cli_main()
    else:
        sys.exit(status)


if __name__ == "__main__":
    main()
