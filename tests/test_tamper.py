"""Tamper evidence: changes made directly in the database are found and named."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocolkit.store import StoreLocation, open_store
from tests.conftest import StoreFactory, drop_postgres_store, postgres_url
from tests.helpers import dose, hb

ACTIONS = ("alter", "delete", "duplicate", "swap")


def _fill(url: str) -> list[str]:
    events = [dose("A", when=f"2024-03-{d:02d}T08:00") for d in range(1, 6)]
    events += [hb("B", when=f"2024-03-{d:02d}T09:00") for d in range(1, 4)]
    with open_store(url) as store:
        store.append(events[:4])
        store.append(events[4:])
        assert store.verify().ok
    return [str(e.event_id) for e in events]


@contextlib.contextmanager
def _fresh_location(backend: str, folder: Path) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        yield str(folder / f"{name}.db")
        return
    try:
        yield postgres_url(name)
    finally:
        drop_postgres_store(name)


def _tamper(url: str, backend: str, action: str, position: int) -> None:
    loc = StoreLocation.parse(url)
    if backend == "sqlite":
        assert loc.path is not None
        conn = sqlite3.connect(loc.path)
        conn.execute("DROP TRIGGER IF EXISTS stored_events_no_update")
        conn.execute("DROP TRIGGER IF EXISTS stored_events_no_delete")
        table, key = "stored_events", "rowid"
        run = conn.execute
    else:
        assert loc.conninfo is not None
        pg = psycopg.connect(loc.conninfo, autocommit=True)
        table, key = f'"{loc.name}_events"', "notification_id"
        pg.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")  # type: ignore[call-overload]
        run = pg.execute  # type: ignore[assignment]
    other = position + 1 if position < 8 else position - 1
    if action == "alter":
        run(f"UPDATE {table} SET state = state || '\\x20'::bytea WHERE {key} = {position}"
            if backend != "sqlite" else
            f"UPDATE {table} SET state = state || x'20' WHERE {key} = {position}")
    elif action == "delete":
        run(f"DELETE FROM {table} WHERE {key} = {position}")
    elif action == "duplicate":
        columns = "originator_id, originator_version + 1000, topic, state"
        run(f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
            f"SELECT {columns} FROM {table} WHERE {key} = {position}")
    else:  # swap the contents of two rows
        run(f"UPDATE {table} SET state = (SELECT state FROM {table} WHERE {key} = {other}), "
            f"topic = (SELECT topic FROM {table} WHERE {key} = {other}) "
            f"WHERE {key} = {position}")
    if backend == "sqlite":
        conn.commit()
        conn.close()
    else:
        pg.close()


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(action=st.sampled_from(ACTIONS), position=st.integers(1, 8))
def test_verify_finds_and_names_every_tampering(
    backend: str, tmp_path: Path, action: str, position: int
) -> None:
    with _fresh_location(backend, tmp_path) as url:
        ids = _fill(url)
        _tamper(url, backend, action, position)
        with open_store(url) as store:
            report = store.verify()
    assert not report.ok
    first = report.problems[0]
    expected_kind = {"alter": "altered", "delete": "removed", "duplicate": "inserted",
                     "swap": "reordered"}[action]
    if action == "duplicate":
        assert first.kind == "inserted" and first.position == 9
        assert first.event_id == ids[position - 1]
    else:
        assert first.kind == expected_kind
        assert first.position == position
        if action == "alter":
            assert first.event_id == ids[position - 1]


def test_an_untouched_log_verifies(backend: str, tmp_path: Path) -> None:
    with _fresh_location(backend, tmp_path) as url:
        _fill(url)
        with open_store(url) as store:
            report = store.verify()
    assert report.ok and report.events == 8 and len(report.head) == 64


@pytest.mark.parametrize("reopen", [False, True])
def test_the_head_hash_moves_with_every_append(make_store: StoreFactory, reopen: bool) -> None:
    store = make_store()
    store.append([dose("A")])
    first = store.verify().head
    if reopen:
        store = make_store()
    store.append([dose("A")])
    assert store.verify().head != first
