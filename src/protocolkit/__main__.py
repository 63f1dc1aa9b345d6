"""``python -m protocolkit``: the command-line interface."""

from protocolkit.cli import run

if __name__ == "__main__":
    run()
