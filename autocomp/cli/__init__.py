"""The ``autocomp`` command: one module per subcommand."""

from autocomp.cli.main import main

__all__ = ["main"]
