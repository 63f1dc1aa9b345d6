"""``python -m protocolkit``: the command-line interface."""

from protocolkit.cli import run

run()
