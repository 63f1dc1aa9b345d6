"""The append-only event store (SQLite by default, PostgreSQL at scale)."""

from protocolkit.store._log import (
    DEFAULT_STORE,
    EventMapper,
    EventStore,
    RecordedEvent,
    StoreLocation,
    open_store,
    subject_stream_id,
)

__all__ = [
    "DEFAULT_STORE",
    "EventMapper",
    "EventStore",
    "RecordedEvent",
    "StoreLocation",
    "open_store",
    "subject_stream_id",
]
