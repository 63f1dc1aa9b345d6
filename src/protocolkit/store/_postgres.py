"""The PostgreSQL recorder: eventsourcing's, plus side tables and append-only triggers.

Imported only for ``postgresql://`` stores; it needs the ``postgres`` extra (psycopg 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

try:
    import psycopg
    from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
    from eventsourcing.utils import retry
    from psycopg import Cursor
    from psycopg.rows import DictRow, tuple_row
    from psycopg.sql import SQL, Composed, Identifier
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "PostgreSQL stores need the 'postgres' extra: pip install 'protocolkit[postgres]'"
    ) from exc

from protocolkit.errors import StoreError
from protocolkit.store._chain import GENESIS, ChainRow, chain_entries

__all__ = ["PostgresEventRecorder", "check_postgres_tables"]


class PostgresEventRecorder(PostgresApplicationRecorder):
    """Records events in ``<name>_events`` and, atomically with them, their ids and subjects.

    Triggers make the database refuse UPDATE, DELETE and TRUNCATE on every table of the log.
    """

    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        prefix = events_table_name.removesuffix("_events")
        self.ids_table = f"{prefix}_event_ids"
        self.subjects_table = f"{prefix}_subjects"
        self.meta_table = f"{prefix}_meta"
        self.chain_table = f"{prefix}_chain"
        schema = Identifier(datastore.schema)
        tables = {
            self.meta_table: "key text PRIMARY KEY, value text NOT NULL",
            self.ids_table: (
                "event_id uuid PRIMARY KEY, originator_id uuid NOT NULL, "
                "originator_version bigint NOT NULL"
            ),
            self.subjects_table: (
                "originator_id uuid PRIMARY KEY, study text NOT NULL, subject text NOT NULL"
            ),
            self.chain_table: (
                "position bigint PRIMARY KEY, originator_id text NOT NULL, "
                "originator_version bigint NOT NULL, event_hash text NOT NULL, "
                "subject_hash text NOT NULL, log_hash text NOT NULL"
            ),
        }
        for table, columns in tables.items():
            self.sql_create_statements.append(
                SQL("CREATE TABLE IF NOT EXISTS {schema}.{table} (" + columns + ")").format(
                    schema=schema, table=Identifier(table)
                )
            )
        self.sql_create_statements.append(
            SQL("CREATE INDEX IF NOT EXISTS {index} ON {schema}.{table} (originator_id, "
                "position)").format(index=Identifier(f"{self.chain_table}_stream"),
                                    schema=schema, table=Identifier(self.chain_table))
        )
        refuse = Identifier(f"{prefix}_append_only")
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{fn}() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'protocolkit: % on % refused: the event log is "
                "append-only', TG_OP, TG_TABLE_NAME; END $$"
            ).format(schema=schema, fn=refuse)
        )
        for table in (events_table_name, self.ids_table, self.subjects_table, self.meta_table,
                      self.chain_table):
            self.sql_create_statements.append(
                SQL(
                    "CREATE OR REPLACE TRIGGER {trigger} BEFORE UPDATE OR DELETE ON "
                    "{schema}.{table} FOR EACH ROW EXECUTE FUNCTION {schema}.{fn}()"
                ).format(
                    trigger=Identifier(f"{table}_append_only"), schema=schema,
                    table=Identifier(table), fn=refuse,
                )
            )
            self.sql_create_statements.append(
                SQL(
                    "CREATE OR REPLACE TRIGGER {trigger} BEFORE TRUNCATE ON "
                    "{schema}.{table} FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{fn}()"
                ).format(
                    trigger=Identifier(f"{table}_no_truncate"), schema=schema,
                    table=Identifier(table), fn=refuse,
                )
            )
        # Batches go in as one array per column, in binary (%b): no text quoting per value.
        self._insert_log = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(schema=schema, table=Identifier(events_table_name))
        self._insert_ids = SQL(
            "INSERT INTO {schema}.{table} SELECT * FROM unnest(%b::uuid[], %b::uuid[], "
            "%b::bigint[])"
        ).format(schema=schema, table=Identifier(self.ids_table))
        self._insert_subjects = SQL(
            "INSERT INTO {schema}.{table} SELECT * FROM unnest(%b::uuid[], %b::text[], "
            "%b::text[]) ON CONFLICT DO NOTHING"
        ).format(schema=schema, table=Identifier(self.subjects_table))
        self._insert_chain = SQL(
            "INSERT INTO {schema}.{table} SELECT * FROM unnest(%b::bigint[], %b::text[], "
            "%b::bigint[], %b::text[], %b::text[], %b::text[])"
        ).format(schema=schema, table=Identifier(self.chain_table))
        # Each subject's last chain entry (one backwards index step per subject: DISTINCT ON
        # or GROUP BY would read all of their entries), and the log's last one (no stream).
        self._heads = SQL(
            "SELECT s.id AS id, (SELECT subject_hash FROM {schema}.{table} WHERE originator_id "
            "= s.id ORDER BY position DESC LIMIT 1) AS subject_hash FROM unnest(%b::text[]) "
            "AS s(id) UNION ALL "
            "(SELECT NULL, log_hash FROM {schema}.{table} ORDER BY position DESC LIMIT 1)"
        ).format(schema=schema, table=Identifier(self.chain_table))

    def create_table(self) -> None:
        """Create the tables, holding a lock that serialises it across processes and stores.

        Concurrent CREATE OR REPLACE TRIGGER statements on the same tables deadlock, and two
        stores created at once in one schema failed with "tuple concurrently updated" (seen
        when two test runs shared the server): eventsourcing creates its composite type, which
        every store of the schema shares, in a transaction of its own.
        """
        with self.datastore.get_connection() as conn:
            key = f"protocolkit:{self.datastore.schema}"
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
            try:
                super().create_table()
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Insert the events, their ids, new subjects and chain entries in one transaction.

        Eventsourcing's own version catches what fails after the INSERT inside its transaction
        block and raises it after the COMMIT, which stored a refused batch without its chain.
        Here anything raised rolls the transaction back first.
        """
        if not stored_events:
            return []
        failure: Exception | None = None
        ids: Sequence[int] | None = None
        with self.datastore.get_connection() as conn:
            with conn.pipeline() as pipeline:
                try:
                    with conn.transaction(), conn.cursor() as curs, conn.cursor() as reader:
                        self._insert_stored_events(curs, stored_events, **kwargs)
                        # The chain heads, read under the table lock taken just before, in
                        # the same round trip. Its own cursor: reading rows on a cursor that
                        # ran executemany in psycopg's pipeline failed (found by the benchmark).
                        texts = {s.originator_id: str(s.originator_id) for s in stored_events}
                        reader.execute(self._heads, (sorted(texts.values()),))
                        # A conflict raises here, as an IntegrityError.
                        pipeline.sync()
                        ids = self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
                        heads = {r["id"]: r["subject_hash"] for r in reader.fetchall()}
                        self._insert_side_rows(curs, stored_events, ids, texts, heads, **kwargs)
                except Exception as exc:
                    failure = exc
            if failure is not None:
                raise failure  # inside get_connection: psycopg errors become eventsourcing's
        return ids

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        # As eventsourcing does (table lock, notify, insert returning the notification ids),
        # but with column arrays: its array of composite values is dumped as text, quoted and
        # escaped value by value in Python.
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(self._insert_log, (
            [s.originator_id for s in stored_events],
            [s.originator_version for s in stored_events],
            [s.topic for s in stored_events],
            [s.state for s in stored_events],
        ))

    def _insert_side_rows(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent],
        ids: Sequence[int] | None, texts: dict[Any, str], heads: dict[str | None, str | None],
        **kwargs: Any,
    ) -> None:
        """The events' ids, new subjects and chain entries: one statement per table."""
        assert ids is not None
        # Still under the table lock, in the same transaction and pipeline as the events.
        # Arrays unnested: executemany would send a statement per row.
        curs.execute(self._insert_ids, [list(c) for c in zip(*kwargs["event_rows"], strict=True)])
        if kwargs["subject_rows"]:
            curs.execute(self._insert_subjects,
                         [list(c) for c in zip(*kwargs["subject_rows"], strict=True)])
        last = heads.pop(None, None) or GENESIS
        entries = chain_entries(
            [(i, texts[s.originator_id], s.originator_version, s.topic, s.state)
             for i, s in zip(ids, stored_events, strict=True)],
            {k: v for k, v in heads.items() if k is not None and v is not None}, last)
        curs.execute(self._insert_chain, [list(c) for c in zip(*entries, strict=True)])

    def _read(self, statement: Composed, params: Sequence[Any]) -> list[Any]:
        # Tuples in binary format: no dict per row, and bytea arrives without hex decoding.
        with self.datastore.get_connection() as conn, conn.cursor(
            row_factory=tuple_row, binary=True
        ) as curs:
            curs.execute(statement, params, prepare=True)
            return curs.fetchall()

    def read_log(
        self, after: int, limit: int, stop: int | None, topics: Sequence[str]
    ) -> list[tuple[int, int, str, bytes]]:
        """Rows ``(position, version, topic, state)`` of the log after ``after``."""
        # Not the stream id: psycopg would make a UUID per row, needed only in errors.
        text = ("SELECT notification_id, originator_version, topic, state FROM {t0} "
                "WHERE notification_id > %s")
        params: list[Any] = [after]
        if stop is not None:
            text += " AND notification_id <= %s"
            params.append(stop)
        if topics:
            text += " AND topic = ANY(%s)"
            params.append(list(topics))
        params.append(limit)
        return self._read(self._q(text + " ORDER BY notification_id LIMIT %s",
                                  self.events_table_name), params)

    def stream_at(self, position: int | None) -> object:
        """The stream id of the row at ``position`` (for messages)."""
        rows = self._read(self._q("SELECT originator_id FROM {t0} WHERE notification_id = %s",
                                  self.events_table_name), (position,))
        return rows[0][0] if rows else None

    def read_stream(self, stream: UUID, after: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Rows ``(version, topic, state)`` of one stream after version ``after``."""
        return self._read(self._q(
            "SELECT originator_version, topic, state FROM {t0} WHERE originator_id = %s AND "
            "originator_version > %s ORDER BY originator_version LIMIT %s",
            self.events_table_name), (stream, after, limit))

    def read_events(
        self, event_ids: Sequence[UUID]
    ) -> list[tuple[UUID, object, int, str, bytes]]:
        """Rows ``(event id, stream, version, topic, state)`` of the events with these ids."""
        if not event_ids:
            return []
        statement = SQL(
            "SELECT i.event_id, e.originator_id, e.originator_version, e.topic, e.state "
            "FROM {ids} i JOIN {events} e ON e.originator_id = i.originator_id AND "
            "e.originator_version = i.originator_version WHERE i.event_id = ANY(%s)"
        ).format(ids=Identifier(self.datastore.schema, self.ids_table),
                 events=Identifier(self.datastore.schema, self.events_table_name))
        return self._read(statement, (list(event_ids),))

    def versions(self, streams: Sequence[UUID]) -> dict[UUID, int]:
        """The last version of each stream that has events."""
        if not streams:
            return {}
        # One backwards step in the primary key per stream (GROUP BY would read them all).
        rows = self._read(self._q(
            "SELECT s.id, (SELECT max(originator_version) FROM {t0} WHERE originator_id = s.id) "
            "FROM unnest(%s::uuid[]) AS s(id)", self.events_table_name), (list(streams),))
        return {r[0]: int(r[1]) for r in rows if r[1] is not None}

    def chain(self) -> list[ChainRow]:
        """Every chain entry, in log order."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._q("SELECT * FROM {t0} ORDER BY position", self.chain_table))
            return [ChainRow(r["position"], r["originator_id"], r["originator_version"],
                             r["event_hash"], r["subject_hash"], r["log_hash"])
                    for r in curs.fetchall()]

    def event_homes(self) -> dict[str, tuple[str, int]]:
        """Where each event id was appended: (stream id, version)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._q("SELECT event_id, originator_id, originator_version "
                                 "FROM {t0}", self.ids_table))
            return {str(r["event_id"]): (str(r["originator_id"]), int(r["originator_version"]))
                    for r in curs.fetchall()}

    def raw_rows(self) -> list[tuple[int, str, int, str, bytes]]:
        """Every stored row as it is in the database, in log order."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._q("SELECT notification_id, originator_id, originator_version, "
                                 "topic, state FROM {t0} ORDER BY notification_id",
                                 self.events_table_name))
            return [(r["notification_id"], str(r["originator_id"]), r["originator_version"],
                     r["topic"], bytes(r["state"])) for r in curs.fetchall()]

    def _q(self, text: str, table: str) -> Composed:
        return SQL(text).format(t0=Identifier(self.datastore.schema, table))

    def init_meta(self, name: str) -> str:
        """Record this store's name (first open only) and return the name recorded."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                self._q("INSERT INTO {t0} VALUES ('store', %s), ('format', '1') "
                        "ON CONFLICT DO NOTHING", self.meta_table),
                (name,),
            )
            curs.execute(self._q("SELECT value FROM {t0} WHERE key = 'store'", self.meta_table))
            row = curs.fetchone()
            assert row is not None
            return str(row["value"])

    def locate(self, event_ids: Sequence[UUID | str]) -> dict[UUID, tuple[UUID, int]]:
        """Where each known event id is stored: (subject stream id, version)."""
        if not event_ids:
            return {}
        rows = self._read(self._q("SELECT event_id, originator_id, originator_version FROM {t0} "
                                  "WHERE event_id = ANY(%s)", self.ids_table),
                          (list(event_ids),))
        return {r[0]: (r[1], int(r[2])) for r in rows}

    def subjects(self) -> list[tuple[str, str, UUID]]:
        """Every (study, subject, stream id) with at least one event, sorted."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._q("SELECT study, subject, originator_id FROM {t0} "
                                 "ORDER BY study, subject", self.subjects_table))
            return [(r["study"], r["subject"], r["originator_id"]) for r in curs.fetchall()]


def check_postgres_tables(conninfo: str, schema: str, name: str) -> None:
    """Refuse ``<name>_events`` if it exists without being a protocolkit store's table."""
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND table_name IN (%s, %s)",
                (schema, f"{name}_events", f"{name}_meta"),
            ).fetchall()
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to PostgreSQL: {exc}".strip()) from None
    found = {r[0] for r in rows}
    if f"{name}_events" in found and f"{name}_meta" not in found:
        raise StoreError(
            f"table {schema}.{name}_events exists but is not a protocolkit store's; "
            "choose another store name (?name=...) or schema"
        )
