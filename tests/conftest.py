"""Shared fixtures: Hypothesis profiles, stores on SQLite and on the PostgreSQL server.

PostgreSQL is found by ``PROTOCOLKIT_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``). Without a server the PostgreSQL tests skip with
the reason shown, unless ``PROTOCOLKIT_REQUIRE_POSTGRES=1`` (as ``.ci/run`` sets), which turns
the skip into a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from protocolkit.store import EventStore, open_store

settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

POSTGRES_URL = os.environ.get(
    "PROTOCOLKIT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("PROTOCOLKIT_REQUIRE_POSTGRES") == "1"


def _postgres_problem() -> str | None:
    try:
        import psycopg

        from protocolkit.store import StoreLocation

        loc = StoreLocation.parse(POSTGRES_URL)
        assert loc.conninfo is not None
        with psycopg.connect(loc.conninfo, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}"
    return None


_PG_PROBLEM: list[str | None] = []


def require_postgres() -> None:
    """Skip (or, when required, fail) a test that needs the PostgreSQL server."""
    if not _PG_PROBLEM:
        _PG_PROBLEM.append(_postgres_problem())
    problem = _PG_PROBLEM[0]
    if problem is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PROTOCOLKIT_REQUIRE_POSTGRES=1 but {problem}")
        pytest.skip(problem)


def drop_postgres_store(name: str) -> None:
    """Drop a test store's tables (DDL: the append-only triggers guard rows, not tables)."""
    import psycopg

    from protocolkit.store import StoreLocation

    loc = StoreLocation.parse(POSTGRES_URL)
    assert loc.conninfo is not None
    with psycopg.connect(loc.conninfo, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND table_name LIKE %s", (f"{name}\\_%",)).fetchall()
        for (table,) in tables:
            conn.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')  # type: ignore[call-overload]
        conn.execute(f'DROP FUNCTION IF EXISTS "{name}_append_only"() CASCADE')


def postgres_url(name: str) -> str:
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}name={name}"


StoreFactory = Callable[..., EventStore]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        require_postgres()
    return str(request.param)


@pytest.fixture
def store_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh store location on the backend under test (tables dropped afterwards)."""
    if backend == "sqlite":
        yield str(tmp_path / "store.db")
        return
    name = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield postgres_url(name)
    finally:
        drop_postgres_store(name)


@pytest.fixture
def make_store(store_url: str) -> Iterator[StoreFactory]:
    """Open stores at the test's location; all are closed at the end."""
    opened: list[EventStore] = []

    def factory(**kwargs: object) -> EventStore:
        store = open_store(store_url, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> EventStore:
    return make_store()
