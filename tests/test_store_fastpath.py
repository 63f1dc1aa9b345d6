"""The store's fast paths give exactly what the validated, generic paths give.

The stored encoder is compiled per class, the trusted decoder builds events without
validation, the store reads rows with its own SQL and inserts a batch in a few statements:
each is checked here against the slow path it replaces, against bytes and hashes written by
earlier versions, on both backends.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import sqlite3
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import attrs
import orjson
import pendulum
import psycopg
import pytest
from eventsourcing.cipher import AESCipher
from eventsourcing.compressor import ZlibCompressor
from hypothesis import given
from hypothesis import strategies as st
from pendulum.tz.timezone import FixedTimezone

from protocolkit.errors import StoreError
from protocolkit.events import (
    EVENT_TYPES,
    DemographicsRecorded,
    DoseAdministered,
    EntryCorrected,
    EntryRetracted,
    Event,
    LabResulted,
    ObservationRecorded,
    Sex,
    SubjectRegistered,
)
from protocolkit.serde import (
    _trusted_instant,
    _trusted_uuid,
    converter,
    decode_stored,
    encode_stored,
    event_from_json,
    event_to_json,
)
from protocolkit.store import EventMapper, EventStore, StoreLocation, open_store
from protocolkit.store._chain import GENESIS, chain_entries, event_hash
from protocolkit.timeutil import format_instant
from protocolkit.units import Quantity, measure
from tests.conftest import StoreFactory, drop_postgres_store, postgres_url, require_postgres
from tests.helpers import dose, hb
from tests.strategies import events, instants

ALL_TYPES = sorted(EVENT_TYPES)


# --- comparing two events exactly ------------------------------------------------------------


def _exact(value: Any, *, folds: bool = True) -> Any:
    """A value's comparable form that == alone would blur: types, zones, folds, digits.

    ``folds=False`` leaves out a fold that changes nothing: pendulum's arithmetic sets fold=1
    on times that are not ambiguous, which no decoder can know (the offset says it all).
    """
    if isinstance(value, dt.datetime):
        tz = value.tzinfo
        return ("datetime", type(value), value.replace(tzinfo=None, fold=0),
                value.fold if folds else None, value.utcoffset(), value.timestamp(), type(tz),
                getattr(tz, "name", None))
    if isinstance(value, UUID):
        return ("uuid", type(value), value.int, value.is_safe, hash(value))
    if isinstance(value, Decimal):
        return ("decimal", str(value))
    if isinstance(value, enum.Enum):
        return ("enum", type(value), value.value)
    if attrs.has(type(value)):
        return (type(value), tuple((a.name, _exact(getattr(value, a.name), folds=folds))
                                   for a in attrs.fields(type(value))))
    if isinstance(value, dict):
        return ("dict", tuple((k, _exact(v, folds=folds)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", tuple(_exact(v, folds=folds) for v in value))
    return (type(value), value)


def _assert_identical(got: Event, expected: Event, *, folds: bool = True) -> None:
    assert got == expected
    assert _exact(got, folds=folds) == _exact(expected, folds=folds)


# --- the encoder and the decoder against cattrs ----------------------------------------------


@pytest.mark.parametrize("event_type", ALL_TYPES)
@given(data=st.data())
def test_fast_encoder_and_decoder_agree_with_the_validated_path(
    event_type: str, data: st.DataObject
) -> None:
    """For every event type: the stored bytes are cattrs' bytes, and decoding them gives the
    event the validated boundary gives, down to zone names, folds, id types and digits."""
    event = data.draw(events(event_type))
    state = encode_stored(event)
    assert state == orjson.dumps(converter.unstructure(event))
    decoded = decode_stored(event_type, state)
    _assert_identical(decoded, event_from_json({"type": event_type, **orjson.loads(state)}))
    _assert_identical(decoded, event, folds=False)
    assert encode_stored(decoded) == state


def _reference_instant(text: str) -> pendulum.DateTime:
    """The trusted decoder's instant as protocolkit 0.x read it (regex, astimezone, rebuild)."""
    stamp, _, rest = text.partition("[")
    parsed = dt.datetime.fromisoformat(stamp)
    if rest:
        zone: Any = pendulum.timezone(rest[:-1])
        local = parsed.astimezone(zone)
    else:
        offset = parsed.utcoffset()
        assert offset is not None
        zone = FixedTimezone(int(offset.total_seconds()))
        local = parsed
    return pendulum.DateTime(local.year, local.month, local.day, local.hour, local.minute,
                             local.second, local.microsecond, tzinfo=zone, fold=local.fold)


@given(instants())
def test_trusted_instants_are_the_written_instants(instant: pendulum.DateTime) -> None:
    text = format_instant(instant)
    back = _trusted_instant(text)
    assert _exact(back) == _exact(_reference_instant(text))
    assert back == instant
    assert _exact(back, folds=False) == _exact(instant, folds=False)
    assert format_instant(back) == text


@pytest.mark.parametrize("text", [
    "2022-10-30T01:30:00+01:00[Europe/London]",  # the first 01:30 of the night (fold 0)
    "2022-10-30T01:30:00+00:00[Europe/London]",  # the second one (fold 1)
    "2024-03-31T02:30:00+00:00[Europe/London]",  # in the spring gap: read as 03:30 BST
    "2024-01-01T08:00:00+09:00[Asia/Shanghai]",  # not the zone's offset: converted
    "2024-01-01T08:00:00.000001+00:00[UTC]",
    "2024-01-01T08:00:00+00:00",
    "2024-01-01T08:00:00-03:30",
    "1900-01-01T00:00:00+08:05:43[Asia/Shanghai]",  # local mean time, seconds in the offset
])
def test_trusted_instant_edge_cases(text: str) -> None:
    assert _exact(_trusted_instant(text)) == _exact(_reference_instant(text))


@pytest.mark.parametrize("text", [
    "2024-01-01T08:00:00+08:00[Asia/Shanghai", "2024-01-01T08:00:00+08:00[Nowhere/Atall]",
    "2024-01-01T08:00:00", "yesterday",
])
def test_trusted_instant_refuses_what_was_never_written(text: str) -> None:
    with pytest.raises(ValueError):
        _trusted_instant(text)


@given(st.uuids())
def test_trusted_uuids_are_uuids(uuid: UUID) -> None:
    back = _trusted_uuid(str(uuid))
    assert _exact(back) == _exact(UUID(str(uuid)))
    assert str(back) == str(uuid) and back == uuid


@pytest.mark.parametrize("text", ["", "1234", "0" * 33, "g" * 32])
def test_trusted_uuid_refuses_what_is_not_one(text: str) -> None:
    with pytest.raises(ValueError):
        _trusted_uuid(text)


def test_a_stored_row_of_the_wrong_shape_is_reported() -> None:
    good = orjson.loads(encode_stored(dose("A")))
    for broken in ({**good, "event_id": "not-a-uuid"}, {k: v for k, v in good.items()
                                                         if k != "dose"}):
        with pytest.raises(Exception, match="does not have the shape written"):
            decode_stored("DoseAdministered", orjson.dumps(broken))


# --- bytes written by earlier versions -------------------------------------------------------


def _id(n: int) -> UUID:
    return UUID(int=n * 0x1000100010001 + 0x5EED)


def _legacy_events() -> list[Event]:
    shanghai = pendulum.timezone("Asia/Shanghai")
    london = pendulum.timezone("Europe/London")
    start = pendulum.DateTime(2024, 3, 1, 8, 0, tzinfo=shanghai)
    common: dict[str, Any] = {"study": "NCT03918265", "subject": "PUMCH-0001",
                              "recorded_by": "nurse.li"}
    # 01:30 on 2022-10-30 happened twice in London: this is the second time (fold 1, GMT).
    second = pendulum.instance(dt.datetime(2022, 10, 30, 1, 30, tzinfo=dt.UTC)).in_timezone(
        london)
    assert second.fold == 1
    return [
        SubjectRegistered(event_id=_id(1), occurred_at=start,
                          recorded_at=start.add(minutes=5, microseconds=123456), site="PUMCH",
                          time_zone="Asia/Shanghai", **common),
        DemographicsRecorded(
            event_id=_id(2),
            occurred_at=pendulum.DateTime(2024, 3, 1, 21, 30,
                                          tzinfo=FixedTimezone(-3 * 3600 - 1800)),
            recorded_at=pendulum.DateTime(2024, 3, 2, 1, 0, tzinfo=FixedTimezone(0)),
            date_of_birth=dt.date(1961, 2, 28), sex=Sex.FEMALE, source="edc", **common),
        LabResulted(event_id=_id(3), occurred_at=second, recorded_at=second.in_timezone("UTC"),
                    loinc="718-7", result=measure("718-7", "9.80", "g/dL"),
                    laboratory="central", **common),
        DoseAdministered(event_id=_id(4), occurred_at=start.add(days=1),
                         recorded_at=start.add(days=1, hours=1), drug="tacrolimus",
                         dose=Quantity("1.50", "mg"), **common),
        EntryCorrected(event_id=_id(5), occurred_at=start.add(days=2),
                       recorded_at=start.add(days=2), corrects=_id(4),
                       changes={"dose": {"value": "1", "unit": "mg"}, "route": None},
                       reason="transcription error", schema_version=2, **common),
        EntryRetracted(event_id=_id(6), occurred_at=start.add(days=3),
                       recorded_at=start.add(days=3), retracts=_id(3),
                       reason="entered in error", **common),
        ObservationRecorded(event_id=_id(7), occurred_at=start.add(days=4),
                            recorded_at=start.add(days=4), code_system="protocol",
                            code="UNABLE-TO-COMPLY", category="no", **common),
    ]


_ENVELOPE = '"study":"NCT03918265","subject":"PUMCH-0001"'
#: What protocolkit wrote for _legacy_events() before the compiled encoder (cattrs + orjson).
LEGACY_STATES = [
    b'{"event_id":"00000000-0000-0000-0001-000100015eee",' + _ENVELOPE.encode() +
    b',"occurred_at":"2024-03-01T08:00:00+08:00[Asia/Shanghai]","recorded_at":"2024-03-01T0'
    b'8:05:00.123456+08:00[Asia/Shanghai]","recorded_by":"nurse.li","source":"api","schema_v'
    b'ersion":1,"time_precision":"instant","site":"PUMCH","screening_number":null,"time_zone'
    b'":"Asia/Shanghai"}',
    b'{"event_id":"00000000-0000-0000-0002-000200025eef",' + _ENVELOPE.encode() +
    b',"occurred_at":"2024-03-01T21:30:00-03:30","recorded_at":"2024-03-02T01:00:00+00:00","'
    b'recorded_by":"nurse.li","source":"edc","schema_version":1,"time_precision":"instant","'
    b'date_of_birth":"1961-02-28","sex":"F"}',
    b'{"event_id":"00000000-0000-0000-0003-000300035ef0",' + _ENVELOPE.encode() +
    b',"occurred_at":"2022-10-30T01:30:00+00:00[Europe/London]","recorded_at":"2022-10-30T01'
    b':30:00+00:00[UTC]","recorded_by":"nurse.li","source":"api","schema_version":1,"time_pr'
    b'ecision":"instant","loinc":"718-7","result":{"value":"9.80","unit":"g/dL","canonical_v'
    b'alue":"98","canonical_unit":"g/L","status":"valid"},"test":null,"specimen_id":null,"la'
    b'boratory":"central"}',
    b'{"event_id":"00000000-0000-0000-0004-000400045ef1",' + _ENVELOPE.encode() +
    b',"occurred_at":"2024-03-02T08:00:00+08:00[Asia/Shanghai]","recorded_at":"2024-03-02T09'
    b':00:00+08:00[Asia/Shanghai]","recorded_by":"nurse.li","source":"api","schema_version":'
    b'1,"time_precision":"instant","drug":"tacrolimus","dose":{"value":"1.50","unit":"mg"},"'
    b'route":null}',
    b'{"event_id":"00000000-0000-0000-0005-000500055ef2",' + _ENVELOPE.encode() +
    b',"occurred_at":"2024-03-03T08:00:00+08:00[Asia/Shanghai]","recorded_at":"2024-03-03T08'
    b':00:00+08:00[Asia/Shanghai]","recorded_by":"nurse.li","source":"api","schema_version":'
    b'2,"time_precision":"instant","corrects":"00000000-0000-0000-0004-000400045ef1","change'
    b's":{"dose":{"value":"1","unit":"mg"},"route":null},"reason":"transcription error"}',
    b'{"event_id":"00000000-0000-0000-0006-000600065ef3",' + _ENVELOPE.encode() +
    b',"occurred_at":"2024-03-04T08:00:00+08:00[Asia/Shanghai]","recorded_at":"2024-03-04T08'
    b':00:00+08:00[Asia/Shanghai]","recorded_by":"nurse.li","source":"api","schema_version":'
    b'1,"time_precision":"instant","retracts":"00000000-0000-0000-0003-000300035ef0","reason'
    b'":"entered in error"}',
    b'{"event_id":"00000000-0000-0000-0007-000700075ef4",' + _ENVELOPE.encode() +
    b',"occurred_at":"2024-03-05T08:00:00+08:00[Asia/Shanghai]","recorded_at":"2024-03-05T08'
    b':00:00+08:00[Asia/Shanghai]","recorded_by":"nurse.li","source":"api","schema_version":'
    b'1,"time_precision":"instant","code_system":"protocol","code":"UNABLE-TO-COMPLY","displa'
    b'y":null,"result":null,"category":"no"}',
]
#: verify().head after appending _legacy_events() in two batches (3 + 4) to a fresh store,
#: as protocolkit computed it before the batched insert (SQLite keeps 32-hex stream ids in the
#: chain, PostgreSQL dashed ones).
LEGACY_HEADS = {
    "sqlite": "37ca3d37102ec823fa7d47c0dbe1dee197ebdccb49e89ef7e144eb7460f630bb",
    "postgres": "11fe37fead160a82cb9bfbd1ff032b81ea8f10e567960283c49828e0f736e057",
}


def test_the_stored_bytes_are_those_earlier_versions_wrote() -> None:
    for event, state in zip(_legacy_events(), LEGACY_STATES, strict=True):
        assert encode_stored(event) == state
        _assert_identical(decode_stored(event.event_type, state), event, folds=False)


def _insert_raw(store_url: str, backend: str, rows: list[tuple[Event, int, bytes]]) -> None:
    """Insert log rows as an earlier version wrote them, bypassing the store."""
    loc = StoreLocation.parse(store_url)
    if backend == "sqlite":
        assert loc.path is not None
        conn = sqlite3.connect(loc.path)
        with conn:
            for event, version, state in rows:
                stream = _stream_of(event)
                conn.execute("INSERT INTO stored_events VALUES (?,?,?,?)",
                             (stream.hex, version, event.event_type, state))
                conn.execute("INSERT INTO protocolkit_event_ids VALUES (?,?,?)",
                             (str(event.event_id), str(stream), version))
                conn.execute("INSERT OR IGNORE INTO protocolkit_subjects VALUES (?,?,?)",
                             (str(stream), event.study, event.subject))
        conn.close()
        return
    assert loc.conninfo is not None
    with psycopg.connect(loc.conninfo, autocommit=True) as pg:
        for event, version, state in rows:
            stream = _stream_of(event)
            pg.execute(f'INSERT INTO "{loc.name}_events" (originator_id, originator_version, '  # type: ignore[call-overload]
                       "topic, state) VALUES (%s, %s, %s, %s)",
                       (stream, version, event.event_type, state))
            pg.execute(f'INSERT INTO "{loc.name}_event_ids" VALUES (%s, %s, %s)',  # type: ignore[call-overload]
                       (event.event_id, stream, version))
            pg.execute(f'INSERT INTO "{loc.name}_subjects" VALUES (%s, %s, %s) '  # type: ignore[call-overload]
                       "ON CONFLICT DO NOTHING", (stream, event.study, event.subject))


def _stream_of(event: Event) -> UUID:
    from protocolkit.store import subject_stream_id

    return subject_stream_id(event.study, event.subject)


def test_rows_written_by_earlier_versions_read_back(
    backend: str, store_url: str, make_store: StoreFactory
) -> None:
    store = make_store(page_size=3)
    legacy = _legacy_events()
    _insert_raw(store_url, backend, [(e, i, s) for i, (e, s) in
                                     enumerate(zip(legacy, LEGACY_STATES, strict=True), 1)])
    read = list(store.events())
    assert [r.version for r in read] == list(range(1, 8))
    for got, expected in zip(read, legacy, strict=True):
        _assert_identical(got.event, expected, folds=False)
        _assert_identical(got.event, decode_stored(expected.event_type, encode_stored(expected)))
    history = [r.event for r in store.history("NCT03918265", "PUMCH-0001")]
    for got_event, expected in zip(history, legacy, strict=True):
        _assert_identical(got_event, expected, folds=False)
    found = store.get(_id(3))
    assert found is not None and found.version == 3
    _assert_identical(found.event, legacy[2])
    assert [len(p) for p in store.pages()] == [3, 3, 1]
    assert [r.event for r in store.events(topics=["LabResulted", "EntryRetracted"])] == [
        legacy[2], legacy[5]]


def test_the_chain_is_what_earlier_versions_computed(
    backend: str, make_store: StoreFactory
) -> None:
    store = make_store()
    legacy = _legacy_events()
    first = store.append(legacy[:3])
    second = store.append(legacy[3:])
    assert [r.position for r in first + second] == list(range(1, 8))
    verification = store.verify()
    assert verification.ok, verification.problems
    assert verification.head == LEGACY_HEADS[backend]
    raw = store._recorder.raw_rows()
    assert [row[4] for row in raw] == LEGACY_STATES


def _old_event_hash(originator_id: str, version: int, topic: str, state: bytes) -> str:
    digest = hashlib.sha256()
    for part in (originator_id.encode(), b"\x1f", str(version).encode(), b"\x1f",
                 topic.encode(), b"\x1f", state):
        digest.update(part)
    return digest.hexdigest()


def test_event_hash_is_unchanged() -> None:
    assert event_hash("0123456789abcdef0123456789abcdef", 7, "DoseAdministered",
                      b'{"a":1}') == (
        "5b46cc6accd333c61497cbe2f59281bff2c66da17e8b1710a496925e22bcb49b")


@given(st.lists(st.tuples(st.sampled_from(["a" * 32, "b" * 32, "c-d"]),
                          st.sampled_from(["DoseAdministered", "LabResulted"]),
                          st.binary(max_size=20)), max_size=8),
       st.dictionaries(st.sampled_from(["a" * 32, "c-d"]), st.text("0123456789abcdef",
                                                                     min_size=64, max_size=64)))
def test_chain_entries_follow_the_chain_definition(
    rows: list[tuple[str, str, bytes]], heads: dict[str, str]
) -> None:
    versions: dict[str, int] = {}
    full = []
    for position, (stream, topic, state) in enumerate(rows, 10):
        versions[stream] = versions.get(stream, 0) + 1
        full.append((position, stream, versions[stream], topic, state))
    subject_heads, log_head = dict(heads), GENESIS
    expected = []
    for position, stream, version, topic, state in full:
        own = _old_event_hash(stream, version, topic, state)
        subject_heads[stream] = hashlib.sha256(
            (subject_heads.get(stream, GENESIS) + own).encode()).hexdigest()
        log_head = hashlib.sha256((log_head + own).encode()).hexdigest()
        expected.append((position, stream, version, own, subject_heads[stream], log_head))
    assert chain_entries(full, heads, GENESIS) == expected


# --- the store's own reads and writes ---------------------------------------------------------


def test_append_positions_are_the_stored_positions(store: EventStore) -> None:
    batches = [[dose(s, when=f"2024-03-{d:02d}T08:00") for s in ("A", "B", "C")
                for d in range(1, 4)], [hb("B"), dose("D"), hb("A")]]
    recorded = [r for batch in batches for r in store.append(batch)]
    read = list(store.events())
    assert [(r.event, r.version, r.position) for r in recorded] == [
        (r.event, r.version, r.position) for r in read]
    assert {s: store.version("STUDY", s) for s in "ABCD"} == {"A": 4, "B": 4, "C": 3, "D": 1}
    assert store.subjects() == [("STUDY", s) for s in "ABCD"]
    assert store.verify().ok


def test_versions_of_many_subjects_in_one_batch(store: EventStore) -> None:
    store.append([dose(f"S{i:03d}") for i in range(0, 600, 2)])  # more than one IN (...) chunk
    batch = [dose(f"S{i:03d}") for i in range(600)]
    recorded = store.append(batch, expected_versions={("STUDY", "S000"): 1})
    assert [r.version for r in recorded] == [2 - i % 2 for i in range(600)]
    assert len(store.subjects()) == 600
    assert store.verify().ok


def test_a_large_append_is_one_transaction(backend: str, store: EventStore) -> None:
    events = [dose(f"S{i % 37}", when=f"2024-03-{1 + i % 28:02d}T08:00") for i in range(1000)]
    store.append(events)
    store.append([dose("S1")])
    assert store.max_position() >= 1001
    verification = store.verify()
    assert verification.ok and verification.events == 1001


def test_rowids_are_looked_up_when_sqlite_picks_them_at_random(tmp_path: Path) -> None:
    """After the largest possible rowid is used, SQLite's new rowids are random, not n+1."""
    store_url = str(tmp_path / "store.db")
    with open_store(store_url) as store:
        store.append([dose("A")])
    conn = sqlite3.connect(StoreLocation.parse(store_url).path or "")
    with conn:
        conn.execute("INSERT INTO stored_events (rowid, originator_id, originator_version, "
                     "topic, state) VALUES (9223372036854775807, 'x', 1, 'y', x'7b7d')")
    conn.close()
    with open_store(store_url) as store:
        batch = [dose("A"), hb("B"), dose("A"), dose("C")]
        recorded = store.append(batch)
        stored = {r.event.event_id: r.position for r in store.events(topics=[
            "DoseAdministered", "LabResulted"])}
        assert [r.position for r in recorded] == [stored[e.event_id] for e in batch]
        assert [r.version for r in recorded] == [2, 1, 3, 1]


def test_encrypted_store_reads_through_every_fast_path(store_url: str) -> None:
    key = AESCipher.create_key(32)
    events = [dose("A"), hb("A"), dose("B"), hb("A")]
    with open_store(store_url, cipher_key=key, page_size=2) as store:
        recorded = store.append(events)
        assert [r.event for r in store.events()] == events
        assert [len(p) for p in store.pages()] == [2, 2]
        assert [r.event for r in store.history("STUDY", "A")] == [events[0], events[1],
                                                                   events[3]]
        found = store.get(events[3].event_id)
        assert found is not None and found.event == events[3] and found.version == 3
        assert [r.position for r in recorded] == [r.position for r in store.events()]
        assert store.verify().ok
        raw = store._recorder.raw_rows()
        assert all(b"tacrolimus" not in row[4] for row in raw)
    with open_store(store_url) as plain, pytest.raises(StoreError, match="cipher key"):
        plain.get(events[0].event_id)
    with open_store(store_url, cipher_key=AESCipher.create_key(32)) as wrong, pytest.raises(
        StoreError, match="wrong or missing cipher key"
    ):
        list(wrong.history("STUDY", "A"))


def test_compressed_and_encrypted_rows_decode() -> None:
    cipher = AESCipher(_cipher_env())
    for mapper in (EventMapper(ZlibCompressor()), EventMapper(ZlibCompressor(), cipher),
                   EventMapper()):
        events = [dose("A"), hb("A")]
        rows = [(i, i, e.event_type, mapper.encode(e)) for i, e in enumerate(events, 1)]
        if mapper.cipher is None and mapper.compressor is not None:
            assert zlib.decompress(rows[0][3]) == encode_stored(events[0])
        decoded = mapper.decode_rows(rows, lambda _: "stream")
        assert [(r.event, r.version, r.position) for r in decoded] == [
            (e, i, i) for i, e in enumerate(events, 1)]
        broken = [*rows, (3, 3, "DoseAdministered", mapper.encode(events[1]))]
        with pytest.raises(StoreError, match="stored event a-stream@3 cannot be decoded"):
            mapper.decode_rows(broken, lambda position: "a-stream" if position == 3 else "")


def _cipher_env() -> Any:
    from eventsourcing.utils import Environment

    return Environment(env={"CIPHER_KEY": AESCipher.create_key(16)})


def test_an_undecodable_row_is_named(backend: str, store_url: str, store: EventStore) -> None:
    good = dose("A")
    store.append([good])
    broken = dose("A")
    _insert_raw(store_url, backend, [(broken, 2, b'{"event_id": "nonsense"}')])
    stream = str(_stream_of(broken))
    with pytest.raises(StoreError, match=f"stored event {stream}@2 cannot be decoded"):
        list(store.events())
    with pytest.raises(StoreError, match=f"stored event {stream}@2 cannot be decoded"):
        list(store.history("STUDY", "A"))
    assert [r.event for r in store.events(stop=1)] == [good]


def test_get_of_a_known_id_whose_row_is_missing(backend: str, store_url: str,
                                                store: EventStore) -> None:
    """An event id the index knows but whose version the log lacks is not found."""
    store.append([dose("A")])
    ghost = dose("A")
    loc = StoreLocation.parse(store_url)
    stream = _stream_of(ghost)
    if backend == "sqlite":
        conn = sqlite3.connect(loc.path or "")
        with conn:
            conn.execute("INSERT INTO protocolkit_event_ids VALUES (?,?,?)",
                         (str(ghost.event_id), str(stream), 5))
        conn.close()
    else:
        assert loc.conninfo is not None
        with psycopg.connect(loc.conninfo, autocommit=True) as pg:
            pg.execute(f'INSERT INTO "{loc.name}_event_ids" VALUES (%s, %s, %s)',  # type: ignore[call-overload]
                       (ghost.event_id, stream, 5))
    assert store.get(ghost.event_id) is None


def test_the_validated_path_and_the_store_agree_on_every_type(store: EventStore) -> None:
    """One event of each type through a real store: what is read is what the boundary makes."""
    legacy = _legacy_events()
    store.append(legacy)
    for recorded, event in zip(store.events(), legacy, strict=True):
        _assert_identical(recorded.event, event_from_json(event_to_json(event)))


def test_a_failure_after_the_insert_stores_nothing(
    backend: str, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever fails once the rows are inserted (here the chain) rolls the whole batch back:
    eventsourcing's PostgreSQL recorder committed such a batch before raising."""
    store.append([dose("A")])
    before = [(r.position, r.event) for r in store.events()]

    def broken(*args: object, **kwargs: object) -> list[Any]:
        raise RuntimeError("the chain broke")

    module = f"protocolkit.store._{backend}"
    monkeypatch.setattr(f"{module}.chain_entries", broken)
    with pytest.raises(RuntimeError, match="the chain broke"):
        store.append([dose("A"), hb("B")])
    monkeypatch.undo()
    assert [(r.position, r.event) for r in store.events()] == before
    assert store.subjects() == [("STUDY", "A")]
    retried = [dose("A"), hb("B")]
    store.append(retried)
    assert [r.event for r in store.events()][1:] == retried
    assert store.verify().ok


@pytest.mark.postgres
def test_stores_created_at_once_in_one_schema() -> None:
    """Eventsourcing replaces one insert function per schema whatever the store's name: two
    stores created at the same moment failed with "tuple concurrently updated"."""
    require_postgres()
    names = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(8)]

    def create(name: str) -> None:
        with open_store(postgres_url(name)) as created:
            created.append([dose("A")])

    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(create, names))
    finally:
        for name in names:
            drop_postgres_store(name)


def test_equal_value_objects_are_shared_and_keep_their_digits() -> None:
    first, second = dose("A", mg="1"), dose("B", mg="1")
    other = dose("C", mg="1.0")
    a, b, c = (decode_stored("DoseAdministered", encode_stored(e)) for e in (first, second,
                                                                              other))
    assert isinstance(a, DoseAdministered) and isinstance(b, DoseAdministered)
    assert isinstance(c, DoseAdministered)
    assert a.dose is b.dose  # frozen: sharing one is safe, and saves building it again
    assert a.dose == c.dose and str(c.dose.value) == "1.0" and str(a.dose.value) == "1"
    many = [dose("A", mg=f"{i}.5") for i in range(5000)]  # more than the cache keeps
    for event in many:
        back = decode_stored("DoseAdministered", encode_stored(event))
        _assert_identical(back, event, folds=False)
