"""What a projection is, and the set-based write every projection uses.

A projection turns a batch of events into effects in two steps: `reduce`
(pure Python, no I/O: fold the batch into at most one row per table key, with
the same merge rule the database applies) and `apply` (COPY those rows into a
temporary table, then one INSERT ... ON CONFLICT per table). Because every
merge rule is a commutative, idempotent "keep the least / greatest / newest",
any order, split or repetition of the same events yields the same tables, and
so the runner only has to guarantee that every event is applied at least once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import psycopg
from psycopg import postgres, sql
from psycopg.adapt import Dumper
from psycopg.pq import Format

from assetlog.errors import AssetlogError
from assetlog.projections.events import Event

try:  # binary COPY rows formatted in C (projections/_copy_binary.c), built with validation's fast path
    from assetlog.projections._fast_events import format_rows as _format_rows
except ImportError:  # built without a C compiler: psycopg formats every row, with the dumpers below
    _format_rows = None


class RefusedEvent(AssetlogError):
    """An event a projection will not store because of what it holds, found only while writing.

    E.g. an event id already stored with another event_time. Raised from
    `apply`; the writer finds the event(s) at fault, as for a row PostgreSQL
    refuses, and dead-letters them with `reason`.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Projection(Protocol):
    """A plain object with no Kafka in it: events in, SQL effects out."""

    name: str

    def reduce(self, events: Iterable[Event], into: Any = None) -> Any:
        """Fold events into the batch's effects (pure; safe to call again on retry).

        `into` continues earlier effects instead of starting afresh: folding two
        batches into one is the same as folding their union (a replay writes
        fewer, bigger batches that way).
        """
        ...

    def apply(self, conn: psycopg.Connection, effects: Any) -> None:
        """Write the effects with set-based SQL inside the caller's transaction."""
        ...


def table(schema: str | None, name: str) -> sql.Identifier:
    """A table name, qualified when the projection writes into a named schema (e.g. a shadow copy)."""
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


# Types a temporary batch table holds as text, cast by the statement that reads it (`staged_select`): in a
# binary COPY psycopg formats text in C, where each uuid value costs a call of a Python dumper. For the
# properties consumer's rows (up to 3 uuids per row) that was 0.35-0.7 us of client CPU per event out of 1.0-1.8
# for the whole COPY (bench/README.md, issue 15, fifth pass); PostgreSQL parses 36 characters instead of
# reading 16 bytes, which does not show in its CPU.
_STAGED_AS_TEXT = frozenset({"uuid"})


def staged_columns(columns: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """`columns` as `copy_to_temp` declares them in its temporary table."""
    return [(name, "text" if type_ in _STAGED_AS_TEXT else type_) for name, type_ in columns]


def staged_select(columns: Sequence[tuple[str, str]]) -> sql.Composed:
    """The select list that reads `columns` back from a `copy_to_temp` table with their declared types."""
    return sql.SQL(", ").join(
        sql.SQL("{}::{}").format(sql.Identifier(name), sql.SQL(type_)) if type_ in _STAGED_AS_TEXT  # type: ignore[arg-type]
        else sql.Identifier(name)
        for name, type_ in columns
    )


def copy_to_temp(
    conn: psycopg.Connection,
    temp: str,
    columns: Sequence[tuple[str, str]],
    rows: Iterable[Sequence[object]],
) -> None:
    """Load `rows` into a session temporary table `temp` (created on first use, emptied at commit).

    uuid columns are staged as text (`staged_columns`): read them back with `staged_select`. Must run
    inside a transaction (in autocommit mode the rows would vanish at once); nothing leaks from one
    batch into the next.
    """
    staged = staged_columns(columns)
    column_defs = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(type_)) for name, type_ in staged  # type: ignore[arg-type]
    )
    with conn.cursor() as cur:
        # One round trip: create on first use; empty it in case an earlier batch of this same
        # (still open) transaction used it.
        cur.execute(
            sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {0} ({1}) ON COMMIT DELETE ROWS; DELETE FROM {0}").format(
                sql.Identifier(temp), column_defs
            )
        )
        copy_rows(cur, sql.Identifier(temp), staged, rows)


# Column types sent as text inside a binary array and cast by PostgreSQL (the projections hold them as text).
_SENT_AS_TEXT = frozenset({"uuid"})


def unnest_rows(columns: Sequence[tuple[str, str]],
                rows: Iterable[Sequence[object]]) -> tuple[sql.Composed, list[list[object]]]:
    """`rows` as a FROM item, `unnest(%b::type[], ...) AS batch(column, ...)`, and its parameters: one
    array per column, sent in binary. Scalar column types only.

    For rows written once by one statement (an upsert), this costs PostgreSQL less than `copy_to_temp`
    and a SELECT from the temporary table (no temporary heap to create, fill, scan and empty in every
    batch), but the client more: psycopg dumps array elements one by one in Python, where COPY's
    `write_row` formats whole rows. Measured for the `assets` rows of P2 (bench/README.md, issue 15,
    "Fourth pass"): PostgreSQL -2.2 to -3.3 CPU-s per 1M events, the client +1.5. So it serves the
    lineage consumer's edges (that consumer waits on PostgreSQL), not the properties consumer's rows.
    Values as `copy_rows` takes them (uuids travel as their text).
    """
    arrays = [list(values) for values in zip(*rows, strict=True)] or [[] for _ in columns]
    placeholders = []
    for (_name, type_), values in zip(columns, arrays, strict=True):
        if type_ in _SENT_AS_TEXT:
            values[:] = [None if v is None else str(v) for v in values]
            placeholders.append(sql.SQL("%b::text[]::{}[]").format(sql.SQL(type_)))  # type: ignore[arg-type]
        else:
            placeholders.append(sql.SQL("%b::{}[]").format(sql.SQL(type_)))  # type: ignore[arg-type]
    from_item = sql.SQL("unnest({}) AS batch({})").format(
        sql.SQL(", ").join(placeholders), sql.SQL(", ").join(sql.Identifier(name) for name, _ in columns))
    return from_item, arrays


class _UuidTextBinaryDumper(Dumper):
    """A uuid column from the canonical text the projections carry (no `uuid.UUID` per value)."""

    format = Format.BINARY
    oid = postgres.types["uuid"].oid

    def dump(self, obj: object) -> bytes:
        if type(obj) is str:
            return bytes.fromhex(obj.replace("-", ""))
        return obj.bytes  # type: ignore[attr-defined]  # a uuid.UUID


class _JsonbTextBinaryDumper(Dumper):
    """A jsonb column from JSON text already made (str or UTF-8 bytes): version 1 + the text."""

    format = Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: object) -> bytes:
        return b"\x01" + (obj if type(obj) is bytes else str(obj).encode())


# The column types `format_rows` writes (its KIND_* numbers); a COPY with any other type goes to psycopg.
_FORMATTED_KINDS = {"text": 0, "uuid": 1, "timestamptz": 2, "jsonb": 3, "text[]": 4, "integer": 5, "bigint": 6}
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # the signature, no flags, no header extension
_COPY_TRAILER = b"\xff\xff"
# Rows formatted per write: PostgreSQL reads one part while the next is formatted, as with psycopg's
# own rows (formatting a whole COPY first made a history COPY 25% slower end to end, bench/README.md).
_ROWS_PER_WRITE = 1000


def copy_rows(cur: psycopg.Cursor, target: sql.Composable, columns: Sequence[tuple[str, str]],
              rows: Iterable[Sequence[object]]) -> None:
    """COPY plain tuples into `target` in PostgreSQL's binary format, with the columns' declared types.

    Binary COPY costs PostgreSQL no text parsing and the client no text formatting (about 40% less
    wall time per history row than text COPY, measured in bench/README.md). Values are what the
    projections hold: uuids as canonical text, jsonb as JSON text or bytes, timestamps as aware
    datetimes. Where the C extension is built, rows are formatted there, a thousand at a time (psycopg
    would call a Python dumper for every uuid and jsonb value); from the first part holding a value
    the C code does not know the form of, psycopg formats the rest, and accepts or refuses them.
    """
    names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in columns)
    kinds = tuple(_FORMATTED_KINDS.get(type_, -1) for _, type_ in columns)
    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, names)) as copy:
        if _format_rows is None or -1 in kinds:
            _write_rows(cur, copy, columns, rows)
            return
        rows = rows if isinstance(rows, list) else list(rows)
        copy.write(_COPY_SIGNATURE)  # block mode: the signature and the trailer are the caller's to send
        for start in range(0, len(rows), _ROWS_PER_WRITE):
            data = _format_rows(rows[start:start + _ROWS_PER_WRITE], kinds)
            if data is None:
                # psycopg writes the rest as rows after the signature already sent, and ends them with
                # the trailer (its row mode); tests/test_copy_binary.py checks such a COPY on a server.
                _write_rows(cur, copy, columns, rows[start:])
                return
            copy.write(data)
        copy.write(_COPY_TRAILER)


def _write_rows(cur: psycopg.Cursor, copy: psycopg.Copy, columns: Sequence[tuple[str, str]],
                rows: Iterable[Sequence[object]]) -> None:
    """psycopg formats the rows, with the dumpers for the forms the projections hold."""
    cur.adapters.register_dumper(None, _UuidTextBinaryDumper)
    cur.adapters.register_dumper(None, _JsonbTextBinaryDumper)
    copy.set_types([type_ for _, type_ in columns])
    for row in rows:
        copy.write_row(row)
