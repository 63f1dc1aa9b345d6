"""pytest plugin: fixtures for testing a protocol (registered through ``pytest11``).

Installing protocolkit makes these fixtures available in every test session:

- ``protocolkit_protocol``: the protocol under test, loaded once per session: the embedded
  NCT03918265 protocol, or the file given with ``--protocolkit-protocol PATH`` (or the
  ``protocolkit_protocol`` ini option);
- ``protocolkit_store``: an empty event store in a temporary SQLite file, closed afterwards.

Nothing is imported from protocolkit until a fixture is used, so the plugin costs nothing in
sessions that do not use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from protocolkit.rules import Protocol
    from protocolkit.store import EventStore

__all__ = ["protocolkit_protocol", "protocolkit_store"]

_OPTION = "--protocolkit-protocol"
_INI = "protocolkit_protocol"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--protocolkit-protocol PATH`` and the ``protocolkit_protocol`` ini option."""
    group = parser.getgroup("protocolkit")
    group.addoption(
        _OPTION, action="store", default=None, metavar="PATH",
        help="protocol file the protocolkit_protocol fixture loads "
             "(default: the embedded NCT03918265 protocol)",
    )
    parser.addini(_INI, "protocol file the protocolkit_protocol fixture loads", default="")
    group.addoption(
        "--protocolkit-coverage", action="store_true", default=False,
        help="report which criteria, deviation rules and response branches of the protocol "
             "the run's evaluations exercised (clause coverage)",
    )


_COVERAGE: list[object] = []


def pytest_configure(config: pytest.Config) -> None:
    """Start recording evaluations when ``--protocolkit-coverage`` is given."""
    if not config.getoption("--protocolkit-coverage"):
        return
    from protocolkit import engine  # noqa: PLC0415 - lazy, as the fixtures below
    from protocolkit.coverage import ClauseCoverage  # noqa: PLC0415
    from protocolkit.rules import default_protocol_path, load_protocol  # noqa: PLC0415

    path = _protocol_path(config)
    coverage = ClauseCoverage(load_protocol(path if path is not None
                                            else default_protocol_path()))
    engine.OBSERVERS.append(coverage.add)
    _COVERAGE.append(coverage)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the clause coverage at the end of the run."""
    for coverage in _COVERAGE:
        terminalreporter.write_sep("-", "protocolkit clause coverage")
        terminalreporter.write_line(coverage.report())  # type: ignore[attr-defined]


def _protocol_path(config: pytest.Config) -> Path | None:
    given = config.getoption(_OPTION) or config.getini(_INI)
    if not given:
        return None
    path = Path(str(given))
    if not path.is_absolute() and config.getoption(_OPTION) is None:
        path = config.rootpath / path  # an ini path is relative to the rootdir
    return path


@pytest.fixture(scope="session")
def protocolkit_protocol(pytestconfig: pytest.Config) -> Protocol:
    """The protocol under test, loaded and checked once per session."""
    from protocolkit.rules import default_protocol_path, load_protocol  # noqa: PLC0415 - lazy: the plugin loads in every session

    path = _protocol_path(pytestconfig)
    return load_protocol(path if path is not None else default_protocol_path())


@pytest.fixture
def protocolkit_store(tmp_path: Path) -> Iterator[EventStore]:
    """An empty event store in a temporary SQLite file, closed at the end of the test."""
    from protocolkit.store import open_store  # noqa: PLC0415 - lazy, as above

    store = open_store(tmp_path / "protocolkit-store.db")
    try:
        yield store
    finally:
        store.close()
