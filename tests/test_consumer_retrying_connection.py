"""The one retry loop of a consumer's PostgreSQL transactions (`RetryingConnection`), on the real server.

The live runner and the replay's shadow writers both go through it. Faults are real: the server
terminates the connection's backend (`pg_terminate_backend`), a value the database refuses, and a
server that does not answer.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import conninfo

from assetlog.backoff import Backoff
from assetlog.compose.processes import free_port
from assetlog.consumers.retry import RetryingConnection, Stopped


@dataclass
class Counted:
    retries: int = 0


def _retrying(dsn: str, stop: threading.Event | None = None) -> tuple[RetryingConnection, Counted, list[int]]:
    stats, opened = Counted(), []

    def connect() -> psycopg.Connection:
        conn = psycopg.connect(dsn, connect_timeout=2)
        opened.append(conn.info.backend_pid)
        return conn

    backoff = Backoff(initial=0.05, maximum=0.1)
    return (RetryingConnection(connect, backoff, stop or threading.Event(), logging.getLogger("test"),
                               "test", stats), stats, opened)


def test_a_terminated_backend_is_replaced_and_the_transaction_retried(isolated, caplog) -> None:
    postgres, stats, opened = _retrying(isolated.dsn)
    assert postgres.transaction(lambda conn: conn.execute("SELECT 1").fetchone()[0], "ask") == 1
    with psycopg.connect(isolated.dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (opened[0],))
    with caplog.at_level(logging.WARNING, logger="test"):
        assert postgres.transaction(lambda conn: conn.execute("SELECT 2").fetchone()[0], "ask again") == 2
    assert stats.retries == 1 and len(opened) == 2 and opened[0] != opened[1]
    assert "test: cannot ask again (" in caplog.text and "retry 1 with backoff" in caplog.text
    postgres.close()


def test_a_value_the_database_refuses_is_raised_at_once_and_the_connection_kept(isolated) -> None:
    postgres, stats, opened = _retrying(isolated.dsn)
    with pytest.raises(psycopg.errors.UntranslatableCharacter):
        postgres.transaction(lambda conn: conn.execute("""SELECT '"\\u0000"'::jsonb->>0""").fetchone(), "refuse")
    # PostgreSQL files "statement too complex" (JSON nested too deeply) with connection failures, as
    # an OperationalError: never temporary all the same.
    with pytest.raises(psycopg.errors.StatementTooComplex):
        postgres.transaction(lambda conn: conn.execute(
            "SELECT (repeat('[', 1000000) || repeat(']', 1000000))::jsonb").fetchone(), "nest")
    with pytest.raises(psycopg.errors.DivisionByZero):
        postgres.transaction(lambda conn: conn.execute("SELECT 1/0").fetchone(), "divide")
    assert stats.retries == 0 and len(opened) == 1
    assert postgres.transaction(lambda conn: conn.execute("SELECT 3").fetchone()[0], "go on") == 3
    assert len(opened) == 1
    postgres.close()


def test_a_stop_while_the_server_does_not_answer_ends_the_wait(isolated) -> None:
    stop = threading.Event()
    nobody = conninfo.make_conninfo(isolated.dsn, port=str(free_port()))
    postgres, stats, _ = _retrying(nobody, stop)
    threading.Timer(0.5, stop.set).start()
    with pytest.raises(Stopped) as stopped:
        postgres.transaction(lambda conn: None, "connect")
    assert isinstance(stopped.value.__cause__, psycopg.OperationalError)
    assert stats.retries >= 1
