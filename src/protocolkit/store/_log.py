"""The event store: an append-only log per subject over ``eventsourcing``'s recorders.

Each subject is one aggregate stream: its id is a uuid5 of (study, subject), its versions count
1, 2, 3... and a primary key on (stream, version) turns two writers of the same version into a
:class:`~protocolkit.errors.ConcurrencyError`. Every event is also in the global log (the
notification log) in record order. We use eventsourcing's recorders, factories, cipher and
compressor, but our own mapper: cattrs + orjson (about 5x faster to decode than eventsourcing's
tagged JSON, and the events stay attrs classes).
"""

from __future__ import annotations

import functools
import gc
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, cast
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID, uuid4, uuid5

import attrs
import orjson
from eventsourcing.application import Application
from eventsourcing.persistence import (
    ApplicationRecorder,
    Cipher,
    Compressor,
    IntegrityError,
    Notification,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.utils import Environment

from protocolkit.corrections import check_target
from protocolkit.errors import (
    ConcurrencyError,
    EventError,
    EventValidationError,
    StoreError,
    StoreIntegrityError,
)
from protocolkit.events import EntryCorrected, EntryRetracted, Event
from protocolkit.serde import decode_stored, encode_stored
from protocolkit.store._chain import ChainRow, Verification, verify_rows
from protocolkit.store._sqlite import check_sqlite_file

__all__ = [
    "DEFAULT_STORE",
    "EventMapper",
    "EventStore",
    "RecordedEvent",
    "StoreLocation",
    "open_store",
    "subject_stream_id",
]

#: The SQLite file a store opens when given no location (in the working folder).
DEFAULT_STORE = "protocolkit.db"
#: Environment variable naming the default store location.
STORE_ENV = "PROTOCOLKIT_STORE"
#: Environment variable holding the store's encryption key (base64, from AESCipher.create_key).
CIPHER_ENV = "PROTOCOLKIT_CIPHER_KEY"
_NAMESPACE = UUID("6f0c5d3e-2b1a-5c4e-9a7d-3e8f1b2c4d5a")
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")


def subject_stream_id(study: str, subject: str) -> UUID:
    """The uuid5 id of a subject's stream (stable across stores and machines)."""
    return _stream(study, subject)[0]


@functools.lru_cache(maxsize=1 << 16)
def _stream(study: str, subject: str) -> tuple[UUID, str, str]:
    """A subject's stream id with its 32-hex and dashed texts, computed once per subject.

    A uuid5 and two texts per event were a sixth of an append's time.
    """
    stream = uuid5(_NAMESPACE, orjson.dumps([study, subject]).decode())
    return stream, stream.hex, str(stream)


def _stream_text(stream: object) -> str:
    """A stream id as messages show it (SQLite keeps 32 hex digits)."""
    try:
        return str(stream if isinstance(stream, UUID) else UUID(str(stream)))
    except ValueError:
        return str(stream)


@attrs.frozen
class RecordedEvent:
    """An event as the store holds it."""

    event: Event
    #: Its place in the subject's stream (1, 2, 3...).
    version: int
    #: Its place in the global log (increasing, may have gaps); None when read per subject.
    position: int | None = None


_SET_EVENT = RecordedEvent.__dict__["event"].__set__
_SET_VERSION = RecordedEvent.__dict__["version"].__set__
_SET_POSITION = RecordedEvent.__dict__["position"].__set__


def _recorded(event: Event, version: int, position: int | None) -> RecordedEvent:
    """``RecordedEvent(event, version, position)``, for every event read.

    Slots set directly: the generated ``__init__`` costs a third more per event.
    """
    recorded = object.__new__(RecordedEvent)
    _SET_EVENT(recorded, event)
    _SET_VERSION(recorded, version)
    _SET_POSITION(recorded, position)
    return recorded


class EventMapper:
    """Maps events to eventsourcing's ``StoredEvent`` and back: cattrs + orjson.

    Compression and encryption, when configured, are eventsourcing's own (compress first, then
    encrypt); the stream id, version and topic columns stay plain so the log can be indexed.
    """

    def __init__(self, compressor: Compressor | None = None, cipher: Cipher | None = None):
        self.compressor = compressor
        self.cipher = cipher

    def to_stored_event(self, event: Event, version: int) -> StoredEvent:
        """Encode ``event`` as version ``version`` of its subject's stream."""
        return StoredEvent(
            originator_id=subject_stream_id(event.study, event.subject),
            originator_version=version,
            topic=event.event_type,
            state=self.encode(event),
        )

    def encode(self, event: Event) -> bytes:
        """The stored bytes of ``event`` (encoded, then compressed and encrypted if set)."""
        state = encode_stored(event)
        if self.compressor is not None:
            state = self.compressor.compress(state)
        if self.cipher is not None:
            state = self.cipher.encrypt(state)
        return state

    def to_event(self, stored: StoredEvent) -> Event:
        """Decode a stored event (decrypt, decompress, structure)."""
        return self.decode(stored.topic, stored.state, stored.originator_id,
                           stored.originator_version)

    def decode(self, topic: str, state: bytes, stream: object, version: int) -> Event:
        """Decode one stored row; ``stream`` and ``version`` only name it in errors."""
        state = self._plain(state)
        try:
            return decode_stored(topic, state)
        except (orjson.JSONDecodeError, EventError) as exc:
            raise self._undecodable(stream, version, exc) from None

    def decode_rows(
        self, rows: Sequence[tuple[int | None, int, str, bytes]],
        stream_of: Callable[[int | None], object],
    ) -> list[RecordedEvent]:
        """Decode rows ``(position, version, topic, state)`` as the store read them.

        ``stream_of(position)`` names a row's stream, only when it cannot be decoded.
        """
        # Decoding makes about six container objects per event, none of them in a cycle:
        # the cyclic collector would walk them every hundred events or so and free nothing
        # (a fifth of the replay time). Paused for the page only; reference counting still
        # frees everything, and a collector someone else turned off stays off.
        collecting = gc.isenabled()
        if collecting:
            gc.disable()
        try:
            return self._decode_rows(rows, stream_of)
        finally:
            if collecting:
                gc.enable()

    def _decode_rows(
        self, rows: Sequence[tuple[int | None, int, str, bytes]],
        stream_of: Callable[[int | None], object],
    ) -> list[RecordedEvent]:
        if self.cipher is None and self.compressor is None:
            # The common case, in one comprehension: the per-row work is the decoding itself.
            try:
                return [_recorded(decode_stored(topic, state), version, position)
                        for position, version, topic, state in rows]
            except (orjson.JSONDecodeError, EventError):
                pass  # decode again row by row below, to name the row at fault
        recorded = []
        for position, version, topic, state in rows:
            try:
                event = decode_stored(topic, self._plain(state))
            except (orjson.JSONDecodeError, EventError) as exc:
                raise self._undecodable(stream_of(position), version, exc) from None
            recorded.append(_recorded(event, version, position))
        return recorded

    def _plain(self, state: bytes) -> bytes:
        if self.cipher is not None:
            try:
                state = self.cipher.decrypt(state)
            except Exception:  # the cipher raises ValueError or its own errors on a wrong key
                raise StoreError(
                    "cannot decrypt the stored events: wrong or missing cipher key"
                ) from None
        if self.compressor is not None:
            state = self.compressor.decompress(state)
        return state

    def _undecodable(self, stream: object, version: int, exc: Exception) -> StoreError:
        hint = "" if self.cipher else " (is the store encrypted? give its cipher key)"
        return StoreError(
            f"stored event {_stream_text(stream)}@{version} cannot be decoded: {exc}{hint}"
        )


@attrs.frozen
class StoreLocation:
    """Where a store lives, parsed from a path or URL."""

    kind: str  # "sqlite" or "postgres"
    name: str
    env: Mapping[str, str]
    display: str
    path: str | None = None
    conninfo: str | None = None
    schema: str = "public"

    @classmethod
    def parse(cls, location: str | os.PathLike[str] | None = None) -> StoreLocation:
        """Parse a store location.

        * ``None``: ``$PROTOCOLKIT_STORE``, else ``protocolkit.db`` in the working folder;
        * a path, or ``sqlite:///abs/path.db`` / ``sqlite:relative.db``: a SQLite file;
        * ``:memory:``: a private in-memory SQLite database (tests, experiments);
        * ``postgresql://user:password@host:port/dbname?schema=public&name=protocolkit``.

        A ``name`` query parameter names the store (default ``protocolkit``); on PostgreSQL
        its tables are ``<name>_events`` and so on, so two names never share a table.
        """
        raw = os.fspath(location) if location is not None else None
        if raw is None:
            raw = os.environ.get(STORE_ENV) or DEFAULT_STORE
        split = urlsplit(raw)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        name = query.pop("name", "protocolkit")
        if not name or set(name) - _NAME_CHARS or not name[0].isalpha() or len(name) > 40:
            raise StoreError(
                f"store name {name!r}: use lower-case letters, digits and _, starting with a "
                "letter, at most 40 characters"
            )
        if split.scheme in ("postgresql", "postgres"):
            return cls._postgres(raw, split, query, name)
        if split.scheme == "sqlite":
            path = unquote(split.path if split.netloc == "" else split.netloc + split.path)
            path = path[1:] if path.startswith("//") else path
        elif split.scheme and len(split.scheme) > 1:
            raise StoreError(
                f"unknown store URL scheme {split.scheme!r} in {raw!r}; "
                "use a path, sqlite:///path.db or postgresql://..."
            )
        else:
            path = raw.split("?", 1)[0]
        if path == ":memory:":
            path = f"file:protocolkit-{uuid4().hex}?mode=memory&cache=shared"
            display = ":memory:"
        else:
            path = str(Path(path).expanduser())
            display = path
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": "30",
            "APPLICATION_RECORDER_TOPIC": "protocolkit.store._sqlite:SQLiteEventRecorder",
        }
        return cls(kind="sqlite", name=name, env=env, display=display, path=path)

    @classmethod
    def _postgres(
        cls, raw: str, split: Any, query: dict[str, str], name: str
    ) -> StoreLocation:
        schema = query.pop("schema", "public")
        dbname = unquote(split.path.lstrip("/")) or "postgres"
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": dbname,
            "POSTGRES_HOST": split.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(split.port or 5432),
            "POSTGRES_USER": unquote(split.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(split.password or ""),
            "POSTGRES_SCHEMA": schema,
            "POSTGRES_CONNECT_TIMEOUT": query.pop("connect_timeout", "10"),
            "POSTGRES_LOCK_TIMEOUT": "30",
            "APPLICATION_RECORDER_TOPIC": "protocolkit.store._postgres:PostgresEventRecorder",
        }
        conninfo = (
            f"host={env['POSTGRES_HOST']} port={env['POSTGRES_PORT']} "
            f"dbname={dbname} user={env['POSTGRES_USER']}"
        )
        if env["POSTGRES_PASSWORD"]:
            conninfo += f" password={env['POSTGRES_PASSWORD']}"
        shown = split._replace(netloc=split.netloc.rsplit("@", 1)[-1]).geturl()
        return cls(kind="postgres", name=name, env=env, display=shown, conninfo=conninfo,
                   schema=schema)


class _LogRecorder(Protocol):
    """Eventsourcing's application recorder plus what our recorder subclasses add."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None: ...
    def select_events(
        self, originator_id: UUID | str, *, gt: int | None = None, lte: int | None = None,
        desc: bool = False, limit: int | None = None,
    ) -> Sequence[StoredEvent]: ...
    def select_notifications(
        self, start: int | None, limit: int, stop: int | None = None,
        topics: Sequence[str] = (), *, inclusive_of_start: bool = True,
    ) -> Sequence[Notification]: ...
    def max_notification_id(self) -> int | None: ...
    def read_log(
        self, after: int, limit: int, stop: int | None, topics: Sequence[str]
    ) -> list[tuple[int, int, str, bytes]]: ...
    def stream_at(self, position: int | None) -> object: ...
    def read_stream(
        self, stream: UUID, after: int, limit: int
    ) -> list[tuple[int, str, bytes]]: ...
    def versions(self, streams: Sequence[UUID]) -> dict[UUID, int]: ...
    def read_events(
        self, event_ids: Sequence[UUID]
    ) -> list[tuple[UUID, object, int, str, bytes]]: ...
    def init_meta(self, name: str) -> str: ...
    def locate(self, event_ids: Sequence[UUID | str]) -> dict[UUID, tuple[UUID, int]]: ...
    def subjects(self) -> list[tuple[str, str, UUID]]: ...
    def chain(self) -> list[ChainRow]: ...
    def raw_rows(self) -> list[tuple[int, str, int, str, bytes]]: ...
    def event_homes(self) -> dict[str, tuple[str, int]]: ...


class _LogApplication(Application[UUID]):
    """Holds eventsourcing's infrastructure (factory, recorder, cipher) for one store."""

    def __init__(self, name: str, env: Mapping[str, str]) -> None:
        self.name = name
        super().__init__(dict(env))

    def construct_env(self, name: str, env: Any = None) -> Environment:
        # Unlike eventsourcing's default, ignore os.environ: a stray PERSISTENCE_MODULE or
        # <NAME>_SQLITE_DBNAME in the shell must never redirect a store.
        return Environment(name, dict(env or {}))


class EventStore:
    """An append-only event log: one stream per subject, one global order.

    Open it with :func:`open_store`; close it (or use it as a context manager) when done.
    """

    def __init__(
        self,
        location: str | os.PathLike[str] | StoreLocation | None = None,
        *,
        cipher_key: str | None = None,
        page_size: int = 1000,
    ) -> None:
        self.location = (
            location if isinstance(location, StoreLocation) else StoreLocation.parse(location)
        )
        if page_size < 1:
            raise StoreError(f"page_size must be at least 1, got {page_size}")
        self.page_size = page_size
        env = dict(self.location.env)
        if cipher_key is None:
            cipher_key = os.environ.get(CIPHER_ENV) or None
        if cipher_key is not None:
            env["CIPHER_TOPIC"] = "eventsourcing.cipher:AESCipher"
            env["CIPHER_KEY"] = cipher_key
        self._check_foreign_tables()
        try:
            self._app = _LogApplication(self.location.name, env)
        except (PersistenceError, OSError, ValueError) as exc:
            raise StoreError(f"cannot open store {self.location.display}: {exc}") from None
        self._recorder = cast(_LogRecorder, self._app.recorder)
        self.mapper = EventMapper(self._app.mapper.compressor, self._app.mapper.cipher)
        recorded_name: str = self._recorder.init_meta(self.location.name)
        if recorded_name != self.location.name:  # pragma: no cover - checked before opening
            raise StoreError(f"store {self.location.display} is named {recorded_name!r}")
        self._lock = threading.Lock()

    def _check_foreign_tables(self) -> None:
        loc = self.location
        if loc.kind == "sqlite":
            assert loc.path is not None
            check_sqlite_file(loc.path, loc.name)
        else:
            # Imported here: psycopg is an optional extra.
            from protocolkit.store._postgres import check_postgres_tables  # noqa: PLC0415

            assert loc.conninfo is not None
            check_postgres_tables(loc.conninfo, loc.schema, loc.name)

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the database connections."""
        self._app.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def recorder(self) -> ApplicationRecorder:
        """The eventsourcing recorder underneath (for projections and tools)."""
        return self._app.recorder

    # --- writing -------------------------------------------------------------------------

    def append(
        self,
        events: Iterable[Event],
        *,
        expected_versions: Mapping[tuple[str, str], int] | None = None,
    ) -> list[RecordedEvent]:
        """Append ``events`` atomically: all are stored, or none is.

        Args:
            events: the events, in the order to record them.
            expected_versions: for optimistic concurrency, the version each subject's stream
                is expected to be at, keyed by ``(study, subject)`` (0 for a new subject).
                Subjects not named are read just before writing; a writer that got there
                first still makes this append fail rather than interleave.

        Returns:
            The recorded events with their versions and global positions.

        Raises:
            ConcurrencyError: another writer appended to one of the subjects first.
            EventError: an event id is already recorded, or a correction or retraction names
                an event that does not exist, belongs to another subject or cannot be corrected.
        """
        batch = list(events)
        if not batch:
            return []
        for i, event in enumerate(batch):
            if not isinstance(event, Event):
                raise EventError(f"item {i} is not an event: {event!r}")
        postgres = self.location.kind == "postgres"
        # psycopg adapts UUID objects to the uuid columns; SQLite keeps ids as text.
        id_keys: list[Any] = ([e.event_id for e in batch] if postgres
                              else [str(e.event_id) for e in batch])
        self._check_ids(batch, id_keys)
        self._check_corrections(batch)
        streams = [_stream(e.study, e.subject) for e in batch]
        # Keyed by the hex text: a str caches its hash, a UUID computes it in Python.
        versions: dict[str, int] = {}
        for (study, subject), version in (expected_versions or {}).items():
            versions[_stream(study, subject)[1]] = version
        unread = [s for h, s in {s[1]: s for s in streams}.items() if h not in versions]
        if unread:  # one query for the batch's subjects, not one per subject
            found = self._recorder.versions([s[0] for s in unread])
            versions.update((s[1], found.get(s[0], 0)) for s in unread)
        encode = self.mapper.encode
        stored: list[StoredEvent] = []
        event_rows: list[tuple[Any, Any, int]] = []
        new_subjects: list[tuple[Any, str, str]] = []
        for event, (stream, hex_id, text_id), id_key in zip(batch, streams, id_keys,
                                                            strict=True):
            version = versions[hex_id] = versions[hex_id] + 1
            if version == 1:  # the subject's first event: record who the stream is
                new_subjects.append((stream if postgres else text_id, event.study,
                                     event.subject))
            # SQLite keeps the stream id as 32 hex digits in the log and dashed in the side
            # tables.
            stored.append(StoredEvent(stream if postgres else hex_id, version,
                                      event.event_type, encode(event)))
            event_rows.append((id_key, stream if postgres else text_id, version))
        positions = self._insert(stored, event_rows, new_subjects)
        return [
            RecordedEvent(e, s.originator_version, p)
            for e, s, p in zip(batch, stored, positions, strict=True)
        ]

    def _insert(
        self, stored: list[StoredEvent], event_rows: list[Any], subject_rows: list[Any]
    ) -> list[int | None]:
        try:
            with self._lock:
                ids = self._recorder.insert_events(
                    stored, event_rows=event_rows, subject_rows=subject_rows
                )
        except IntegrityError as exc:
            text = str(exc)
            if "event_ids" in text:
                raise EventError(
                    "an event with one of these event ids is already recorded"
                ) from None
            if "append-only" in text:  # pragma: no cover - we never update
                raise StoreIntegrityError(text) from None
            raise ConcurrencyError(
                "another writer appended to the same subject first; nothing was appended "
                "(reload the subject and retry)"
            ) from None
        except PersistenceError as exc:
            raise StoreError(f"the store refused the append: {exc}") from None
        return list(ids) if ids is not None else [None] * len(stored)

    def _check_ids(self, batch: Sequence[Event], keys: Sequence[UUID | str]) -> None:
        errors = []
        numbers = [e.event_id.int for e in batch]  # ints hash in C, UUIDs in Python
        if len(set(numbers)) < len(numbers):
            seen: set[int] = set()
            for i, (event, number) in enumerate(zip(batch, numbers, strict=True)):
                if number in seen:
                    errors.append(EventError(
                        f"event id {event.event_id} appears twice in the batch",
                        field="event_id", line=i + 1))
                seen.add(number)
        known = self._recorder.locate(keys)
        for i, event in enumerate(batch if known else ()):
            if event.event_id in known:
                errors.append(EventError(f"event id {event.event_id} is already recorded",
                                         field="event_id", line=i + 1))
        if errors:
            raise errors[0] if len(errors) == 1 else EventValidationError(errors)

    def _check_corrections(self, batch: Sequence[Event]) -> None:
        fixes = [e for e in batch if isinstance(e, EntryCorrected | EntryRetracted)]
        if not fixes:
            return
        targets = {e.corrects if isinstance(e, EntryCorrected) else e.retracts for e in fixes}
        # Ids are unique in the batch (checked first): where each event is, by its id.
        in_batch = {e.event_id: (i, e) for i, e in enumerate(batch)}
        stored = self._get_many([t for t in targets if t not in in_batch])
        errors = []
        for i, event in enumerate(batch):
            if isinstance(event, EntryCorrected | EntryRetracted):
                target_id = (
                    event.corrects if isinstance(event, EntryCorrected) else event.retracts
                )
                place, target = in_batch.get(target_id, (None, None))
                if place is not None and place > i:
                    target = None  # must be recorded before what corrects it
                if target is None and target_id in stored:
                    target = stored[target_id].event
                try:
                    check_target(event, target)
                except EventError as exc:
                    errors.append(exc.located(line=i + 1))
        if errors:
            raise errors[0] if len(errors) == 1 else EventValidationError(errors)

    def _current_version(self, stream: UUID) -> int:
        return self._recorder.versions([stream]).get(stream, 0)

    # --- reading -------------------------------------------------------------------------

    def version(self, study: str, subject: str) -> int:
        """The number of events in a subject's stream (0 if none)."""
        return self._current_version(subject_stream_id(study, subject))

    def history(self, study: str, subject: str) -> Iterator[RecordedEvent]:
        """A subject's events in record order, read in pages (memory stays flat)."""
        stream = subject_stream_id(study, subject)
        after = 0
        while True:
            rows = self._recorder.read_stream(stream, after, self.page_size)
            yield from self.mapper.decode_rows(
                [(None, version, topic, state) for version, topic, state in rows],
                lambda _: stream)
            if len(rows) < self.page_size:
                return
            after = rows[-1][0]

    def events(
        self, *, after: int = 0, topics: Sequence[str] = (), stop: int | None = None
    ) -> Iterator[RecordedEvent]:
        """Every event of the store in global record order, after position ``after``.

        Read in pages of ``page_size``; ``topics`` limits it to some event types; ``stop``
        is the last position to read (inclusive).
        """
        for batch in self.pages(after=after, topics=topics, stop=stop):
            yield from batch

    def pages(
        self, *, after: int = 0, topics: Sequence[str] = (), stop: int | None = None
    ) -> Iterator[list[RecordedEvent]]:
        """The global log as pages of at most ``page_size`` decoded events."""
        # Rows straight from the log table: eventsourcing's select_notifications would make a
        # Notification and a UUID per row, a fifth of the decoding time.
        while True:
            rows = self._recorder.read_log(after, self.page_size, stop, topics)
            if not rows:
                return
            yield self.mapper.decode_rows(rows, self._recorder.stream_at)
            after = rows[-1][0]

    def max_position(self) -> int:
        """The position of the last event in the global log (0 when empty)."""
        return int(self._recorder.max_notification_id() or 0)

    def get(self, event_id: UUID) -> RecordedEvent | None:
        """The event with this id, or None."""
        return self._get_many([event_id]).get(event_id)

    def _get_many(self, event_ids: Sequence[UUID]) -> dict[UUID, RecordedEvent]:
        """The stored events with these ids (one query: the id index joined to the log)."""
        if not event_ids:
            return {}
        decode = self.mapper.decode
        return {
            event_id: RecordedEvent(decode(topic, state, stream, version), version)
            for event_id, stream, version, topic, state in self._recorder.read_events(event_ids)
        }

    def verify(self) -> Verification:
        """Recompute the integrity chain over the rows as they are in the database.

        Names the first event that was altered, removed, inserted or reordered, even by a
        change made directly in the database; ``head`` is the hash auditors keep.
        """
        names: dict[str, tuple[str, str]] = {}
        for study, subject, stream in self._recorder.subjects():
            names[stream.hex] = names[str(stream)] = (study, subject)
        return verify_rows(self._recorder.raw_rows(), self._recorder.chain(), names,
                           self._recorder.event_homes())

    def studies_of(self, subject: str) -> list[str]:
        """The studies in which ``subject`` has events (usually one)."""
        return sorted({s for s, subj, _ in self._recorder.subjects() if subj == subject})

    def subjects(self, study: str | None = None) -> list[tuple[str, str]]:
        """Every (study, subject) with at least one event, sorted."""
        return [
            (s, subj) for s, subj, _ in self._recorder.subjects() if study in (None, s)
        ]


def open_store(
    location: str | os.PathLike[str] | None = None,
    *,
    cipher_key: str | None = None,
    page_size: int = 1000,
) -> EventStore:
    """Open (creating if needed) the store at ``location``; see :meth:`StoreLocation.parse`.

    >>> with open_store(":memory:") as store:
    ...     store.max_position()
    0
    """
    return EventStore(location, cipher_key=cipher_key, page_size=page_size)
