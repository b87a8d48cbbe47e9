"""Binary COPY rows formatted in C (projections/_copy_binary.c) are the rows psycopg would send.

`copy_rows` formats a COPY's rows in C when every value is of a form that code
knows, and lets psycopg format them otherwise. So for drawn rows of every column
type the projections write, the C bytes must equal psycopg's (with the dumpers
`copy_rows` registers), and a value of another form must make the C code decline
rather than write something else; a real COPY of drawn rows must read back the
same values either way.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.adapt import Transformer
from psycopg.pq import Format

from assetlog.projections import base
from assetlog.projections.base import (
    _FORMATTED_KINDS,
    _JsonbTextBinaryDumper,
    _UuidTextBinaryDumper,
    copy_rows,
)

pytestmark = pytest.mark.skipif(base._format_rows is None, reason="the C extension is not built")

try:
    from psycopg._copy_base import format_row_binary
except ImportError:  # psycopg's layout before 3.2
    from psycopg.copy import format_row_binary  # type: ignore[no-redef]

COLUMNS = (("t", "text"), ("u", "uuid"), ("ts", "timestamptz"), ("j", "jsonb"), ("a", "text[]"),
           ("i", "integer"), ("b", "bigint"))

texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-11))])
values = {
    "text": texts,
    "uuid": st.uuids().map(str).flatmap(lambda u: st.sampled_from([u, u.upper()])),
    "timestamptz": st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=zones),
    "jsonb": st.dictionaries(texts, st.integers(-(2**63), 2**63 - 1) | texts, max_size=3).map(orjson.dumps).flatmap(
        lambda b: st.sampled_from([b, b.decode()])),
    "text[]": st.lists(st.none() | texts, max_size=4),
    "integer": st.integers(-(2**31), 2**31 - 1),
    "bigint": st.integers(-(2**63), 2**63 - 1),
}
rows = st.lists(st.tuples(*(st.none() | values[type_] for _, type_ in COLUMNS)), max_size=20)


def psycopg_bytes(conn: psycopg.Connection, drawn: list[tuple]) -> bytes:
    """What `copy_rows` sends through psycopg (its fallback): the same dumpers, the same declared types."""
    cur = conn.cursor()
    cur.adapters.register_dumper(None, _UuidTextBinaryDumper)
    cur.adapters.register_dumper(None, _JsonbTextBinaryDumper)
    transformer = Transformer(cur)
    oids = [cur.adapters.types[type_].oid if not type_.endswith("[]") else cur.adapters.types[type_[:-2]].array_oid
            for _, type_ in COLUMNS]
    transformer.set_dumper_types(oids, Format.BINARY)
    out = bytearray()
    for row in drawn:
        format_row_binary(row, transformer, out)
    return bytes(out)


@pytest.fixture(scope="module")
def conn(stack):
    with psycopg.connect(stack.admin_dsn, autocommit=True) as connection:
        yield connection


KINDS = tuple(_FORMATTED_KINDS[type_] for _, type_ in COLUMNS)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=rows)
def test_the_c_rows_are_psycopgs_rows_byte_for_byte(conn, drawn):
    assert base._format_rows(drawn, KINDS) == psycopg_bytes(conn, drawn)


@pytest.mark.parametrize(("column", "value"), [
    ("u", uuid.UUID(int=5)),  # a uuid object: psycopg's dumper takes it
    ("u", "not-a-uuid-at-all-but-36-characters"),  # psycopg's dumper refuses it, with its own error
    ("u", "0123456789abcdef0123456789abcdef"),  # hex without hyphens
    ("ts", datetime(2025, 1, 1)),  # naive
    ("i", 2**31),  # out of integer's range
    ("b", 2**63),
    ("t", b"bytes"),
    ("t", "lone \ud800 surrogate"),
    ("a", ("tuple", "not list")),
    ("j", {"a": 1}),
])
def test_a_value_of_another_form_makes_the_c_code_decline(column, value):
    row = [None] * len(COLUMNS)
    row[[name for name, _ in COLUMNS].index(column)] = value
    assert base._format_rows([tuple(row)], KINDS) is None
    assert base._format_rows([tuple(row[:-1])], KINDS) is None  # a row of another length


def test_it_declines_rows_that_are_not_tuples_and_refuses_unknown_kinds():
    assert base._format_rows([[None] * len(COLUMNS)], KINDS) is None
    with pytest.raises(ValueError, match="unknown column kind"):
        base._format_rows([], (99,))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=rows)
def test_a_copy_reads_back_the_same_values_either_way(conn, drawn):
    """Through a real COPY: the C path and psycopg's path store the same values."""
    read = []
    for formatter in (base._format_rows, None):
        original, base._format_rows = base._format_rows, formatter
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("CREATE TEMPORARY TABLE copied (n serial, t text, u uuid, ts timestamptz, j jsonb, "
                            "a text[], i integer, b bigint) ON COMMIT DROP")
                copy_rows(cur, sql.Identifier("copied"), COLUMNS, drawn)
                read.append(cur.execute("SELECT t, u, ts, j, a, i, b FROM copied ORDER BY n").fetchall())
        finally:
            base._format_rows = original
    assert read[0] == read[1] and len(read[0]) == len(drawn)


@pytest.mark.parametrize("declined_at", [0, 999, 1000, 2499])
def test_a_value_the_c_code_declines_still_goes_through_psycopg(conn, declined_at):
    """Parts before it were sent formatted in C; psycopg writes the rest, in the same COPY."""
    rows = [(str(uuid.UUID(int=n)), datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=n)) for n in range(2500)]
    rows[declined_at] = (uuid.UUID(int=declined_at), rows[declined_at][1])
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE copied (n serial, u uuid, ts timestamptz) ON COMMIT DROP")
        copy_rows(cur, sql.Identifier("copied"), (("u", "uuid"), ("ts", "timestamptz")), rows)
        read = cur.execute("SELECT u, ts FROM copied ORDER BY n").fetchall()
    assert read == [(uuid.UUID(int=n), datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=n)) for n in range(2500)]


@given(text=st.uuids().map(str), at=st.integers(0, 35), char=st.characters(max_codepoint=0x2FF))
def test_uuid_text_with_any_character_out_of_place_is_declined(text, at, char):
    """psycopg's dumper decides on anything but canonical text (it refuses a digit that is not hex)."""
    changed = text[:at] + char + text[at + 1:]
    valid = all((c == "-") if i in (8, 13, 18, 23) else c in "0123456789abcdefABCDEF" for i, c in enumerate(changed))
    row = (None, changed, None, None, None, None, None)
    assert (base._format_rows([row], KINDS) is None) is not valid
