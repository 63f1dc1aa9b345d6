"""The store contract: the same suite on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
from eventsourcing.cipher import AESCipher

from protocolkit.errors import (
    ConcurrencyError,
    EventError,
    EventValidationError,
    StoreError,
)
from protocolkit.events import SubjectRegistered
from protocolkit.serde import event_to_json
from protocolkit.store import EventStore, StoreLocation, open_store, subject_stream_id
from tests.conftest import StoreFactory, drop_postgres_store, postgres_url, require_postgres
from tests.helpers import correct, dose, envelope, hb, retract


def _snapshot(store: EventStore) -> list[tuple[int | None, int, dict[str, object]]]:
    return [(r.position, r.version, event_to_json(r.event)) for r in store.events()]


class TestAppend:
    def test_versions_count_per_subject_and_positions_increase(self, store: EventStore) -> None:
        recorded = store.append([dose("A"), dose("B"), hb("A"), dose("A")])
        assert [(r.event.subject, r.version) for r in recorded] == [
            ("A", 1), ("B", 1), ("A", 2), ("A", 3)
        ]
        positions = [r.position for r in recorded]
        assert all(p is not None for p in positions)
        assert positions == sorted(positions)  # type: ignore[type-var]
        assert store.version("STUDY", "A") == 3
        assert store.version("STUDY", "B") == 1
        assert store.version("STUDY", "nobody") == 0

    def test_round_trip_is_exact_including_zone_names(self, store: EventStore) -> None:
        events = [dose("A"), hb("A", value="7.45", unit="mmol/L")]
        store.append(events)
        back = [r.event for r in store.history("STUDY", "A")]
        assert back == events
        assert [event_to_json(e) for e in back] == [event_to_json(e) for e in events]
        assert back[0].occurred_at.timezone_name == "Asia/Shanghai"

    def test_history_is_record_order_and_global_log_interleaves(self, store: EventStore) -> None:
        batch = [dose("A", when="2024-03-02T08:00"), dose("B"), dose("A", when="2024-03-01T08:00")]
        store.append(batch)
        store.append([hb("B")])
        assert [r.event for r in store.history("STUDY", "A")] == [batch[0], batch[2]]
        assert [r.event.subject for r in store.events()] == ["A", "B", "A", "B"]
        assert store.max_position() == list(store.events())[-1].position

    def test_empty_append_is_a_no_op(self, store: EventStore) -> None:
        assert store.append([]) == []
        assert store.max_position() == 0

    def test_subjects_and_studies(self, store: EventStore) -> None:
        store.append([dose("A"), dose("B", study="OTHER"), dose("A", study="OTHER")])
        assert store.subjects() == [("OTHER", "A"), ("OTHER", "B"), ("STUDY", "A")]
        assert store.subjects("STUDY") == [("STUDY", "A")]
        assert store.studies_of("A") == ["OTHER", "STUDY"]

    def test_get_by_event_id(self, store: EventStore) -> None:
        events = [dose("A"), hb("A")]
        store.append(events)
        got = store.get(events[1].event_id)
        assert got is not None and got.event == events[1] and got.version == 2
        assert store.get(dose("Z").event_id) is None


class TestConcurrency:
    def test_stale_expected_version_is_refused(self, store: EventStore) -> None:
        store.append([dose("A")])
        with pytest.raises(ConcurrencyError):
            store.append([dose("A")], expected_versions={("STUDY", "A"): 0})
        assert store.version("STUDY", "A") == 1

    def test_two_writers_of_one_version_one_wins(self, make_store: StoreFactory) -> None:
        first, second = make_store(), make_store()
        first.append([dose("A")])
        seen = second.version("STUDY", "A")
        first.append([dose("A")])  # the other writer gets there first
        late = dose("A")
        with pytest.raises(ConcurrencyError):
            second.append([late], expected_versions={("STUDY", "A"): seen})
        assert second.get(late.event_id) is None
        assert second.version("STUDY", "A") == 2

    def test_concurrency_error_is_a_store_error(self) -> None:
        assert issubclass(ConcurrencyError, StoreError)


class TestAtomicBatch:
    def test_a_conflict_anywhere_stores_nothing(self, store: EventStore) -> None:
        store.append([dose("B")])
        before = _snapshot(store)
        with pytest.raises(ConcurrencyError):
            store.append(
                [dose("A"), hb("A"), dose("B")], expected_versions={("STUDY", "B"): 0}
            )
        assert _snapshot(store) == before
        assert store.version("STUDY", "A") == 0
        assert store.subjects() == [("STUDY", "B")]

    def test_a_duplicate_event_id_stores_nothing(self, store: EventStore) -> None:
        first = dose("A")
        store.append([first])
        before = _snapshot(store)
        with pytest.raises(EventError, match="already recorded"):
            store.append([dose("A"), first])
        assert _snapshot(store) == before

    def test_a_duplicate_within_the_batch_is_refused(self, store: EventStore) -> None:
        one = dose("A")
        with pytest.raises(EventError, match="twice"):
            store.append([one, one])
        assert store.max_position() == 0


class TestCorrections:
    def test_correction_of_a_stored_event(self, store: EventStore) -> None:
        wrong = hb("A", value="9.8")
        store.append([wrong])
        fix = correct(wrong, result={"value": "10.8", "unit": "g/dL"})
        store.append([fix])
        assert store.version("STUDY", "A") == 2

    def test_correction_and_target_in_one_batch(self, store: EventStore) -> None:
        wrong = dose("A", mg="2")
        store.append([wrong, correct(wrong, dose={"value": "1", "unit": "mg"})])
        assert store.version("STUDY", "A") == 2

    def test_correction_before_its_target_in_a_batch_is_refused(self, store: EventStore) -> None:
        wrong = dose("A")
        with pytest.raises(EventError, match="no recorded event"):
            store.append([retract(wrong), wrong])
        assert store.max_position() == 0

    def test_correction_of_an_unknown_event_is_refused(self, store: EventStore) -> None:
        with pytest.raises(EventError, match="no recorded event") as info:
            store.append([retract(dose("A"))])
        assert info.value.field == "retracts"
        assert store.max_position() == 0

    def test_correction_of_another_subjects_event_is_refused(self, store: EventStore) -> None:
        theirs = dose("B")
        store.append([theirs])
        fix = correct(theirs, dose={"value": "1", "unit": "mg"})
        foreign = type(fix)(**{**_fields(fix), "subject": "A"})
        with pytest.raises(EventError, match="belongs to subject 'B'"):
            store.append([foreign])
        assert store.version("STUDY", "A") == 0

    def test_correction_to_an_invalid_value_is_refused(self, store: EventStore) -> None:
        target = hb("A")
        store.append([target])
        with pytest.raises(EventError) as info:
            store.append([correct(target, result={"value": "9.8", "unit": "gm/dL"})])
        assert "result.unit" in str(info.value)
        with pytest.raises(EventError, match="has no field"):
            store.append([correct(target, dose={"value": "1", "unit": "mg"})])
        assert store.version("STUDY", "A") == 1

    def test_several_bad_corrections_are_reported_together(self, store: EventStore) -> None:
        with pytest.raises(EventValidationError) as info:
            store.append([retract(dose("A")), retract(dose("A"))])
        assert len(info.value.errors) == 2


def _fields(event: object) -> dict[str, object]:
    import attrs

    return attrs.asdict(event, recurse=False)  # type: ignore[arg-type]


class TestPaging:
    @pytest.mark.parametrize("page_size", [1, 3, 10, 1000])
    def test_pages_return_everything_in_order(
        self, make_store: StoreFactory, page_size: int
    ) -> None:
        store = make_store(page_size=page_size)
        events = [dose("A", when=f"2024-03-{d:02d}T08:00") for d in range(1, 11)]
        store.append(events[:4])
        store.append([hb("B")])
        store.append(events[4:])
        assert [r.event for r in store.history("STUDY", "A")] == events
        assert [r.version for r in store.history("STUDY", "A")] == list(range(1, 11))
        everything = list(store.events())
        assert len(everything) == 11
        positions = [r.position for r in everything]
        assert positions == sorted(set(positions))  # type: ignore[type-var]
        resumed = list(store.events(after=everything[4].position or 0))
        assert resumed == everything[5:]
        assert all(len(p) <= page_size for p in store.pages())

    def test_topics_filter(self, store: EventStore) -> None:
        store.append([dose("A"), hb("A"), dose("B")])
        assert [r.event.event_type for r in store.events(topics=["LabResulted"])] == [
            "LabResulted"
        ]


class TestAppendOnly:
    def test_the_database_refuses_update_and_delete(
        self, backend: str, store: EventStore, store_url: str
    ) -> None:
        store.append([dose("A"), hb("A")])
        before = _snapshot(store)
        location = StoreLocation.parse(store_url)
        if backend == "sqlite":
            assert location.path is not None
            conn = sqlite3.connect(location.path)
            try:
                for statement in (
                    "UPDATE stored_events SET state = x'00'",
                    "DELETE FROM stored_events",
                    "DELETE FROM protocolkit_event_ids",
                    "UPDATE protocolkit_meta SET value = 'other'",
                ):
                    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                        conn.execute(statement)
            finally:
                conn.close()
        else:
            assert location.conninfo is not None
            table = f"{location.name}_events"
            with psycopg.connect(location.conninfo, autocommit=True) as conn:
                for statement in (
                    f'UPDATE "{table}" SET state = NULL',
                    f'DELETE FROM "{table}"',
                    f'TRUNCATE "{table}"',
                    f'DELETE FROM "{location.name}_event_ids"',
                ):
                    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                        conn.execute(statement)  # type: ignore[call-overload]
        assert _snapshot(store) == before


class TestSeparation:
    def test_two_store_names_never_share_a_sqlite_file(self, tmp_path: Path) -> None:
        path = tmp_path / "s.db"
        with open_store(path) as store:
            store.append([dose("A")])
        with pytest.raises(StoreError, match="is the protocolkit store 'protocolkit'"):
            open_store(f"{path}?name=other")

    def test_a_foreign_eventsourcing_file_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "foreign.db"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE stored_events (originator_id TEXT, originator_version "
                     "INTEGER, topic TEXT, state BLOB)")
        conn.close()
        with pytest.raises(StoreError, match="not a protocolkit store"):
            open_store(path)

    def test_not_a_database(self, tmp_path: Path) -> None:
        path = tmp_path / "junk.db"
        path.write_text("hello, this is not SQLite" * 100)
        with pytest.raises(StoreError):
            open_store(path)

    @pytest.mark.postgres
    def test_two_names_use_separate_postgres_tables(self) -> None:
        require_postgres()
        names = ["t_sep_a", "t_sep_b"]
        try:
            with open_store(postgres_url(names[0])) as a, open_store(postgres_url(names[1])) as b:
                a.append([dose("A")])
                assert b.max_position() == 0
                assert b.subjects() == []
        finally:
            for name in names:
                drop_postgres_store(name)

    def test_bad_locations(self) -> None:
        with pytest.raises(StoreError, match="scheme"):
            open_store("mysql://x/y")
        with pytest.raises(StoreError, match="store name"):
            open_store("x.db?name=Bad-Name")

    def test_default_location_is_protocolkit_db_in_the_working_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("PROTOCOLKIT_STORE", raising=False)
        with open_store() as store:
            store.append([dose("A")])
        assert (tmp_path / "protocolkit.db").exists()

    def test_stream_ids_are_uuid5_of_study_and_subject(self) -> None:
        one = subject_stream_id("S", "001")
        assert one.version == 5
        assert one == subject_stream_id("S", "001")
        assert one != subject_stream_id("S0", "01")


class TestEncryption:
    def test_encrypted_store_round_trips_and_needs_its_key(self, store_url: str) -> None:
        key = AESCipher.create_key(32)
        events = [SubjectRegistered(**envelope("A"), site="PUMCH"), hb("A")]
        with open_store(store_url, cipher_key=key) as store:
            store.append(events)
            assert [r.event for r in store.history("STUDY", "A")] == events
        with open_store(store_url) as plain, pytest.raises(StoreError, match="cipher key"):
            list(plain.history("STUDY", "A"))
        wrong = AESCipher.create_key(32)
        with open_store(store_url, cipher_key=wrong) as store, pytest.raises(
            StoreError, match="wrong or missing cipher key"
        ):
            list(store.events())


def test_the_process_environment_never_redirects_a_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSISTENCE_MODULE", "eventsourcing.popo")
    monkeypatch.setenv("PROTOCOLKIT_SQLITE_DBNAME", str(tmp_path / "elsewhere.db"))
    with open_store(tmp_path / "here.db") as store:
        store.append([dose("A")])
    assert (tmp_path / "here.db").exists()
    assert not (tmp_path / "elsewhere.db").exists()
    with open_store(tmp_path / "here.db") as store:
        assert store.version("STUDY", "A") == 1
