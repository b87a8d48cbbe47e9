"""`assetlog stack up|down|status|env`: the local Kafka + PostgreSQL stack.

A variable that is already set (ASSETLOG_KAFKA_BOOTSTRAP, ASSETLOG_POSTGRES_DSN)
and points elsewhere than the local stack means "use that server": the stack
then neither starts nor stops it.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from assetlog.compose.kafka import KafkaBroker, kafka_available
from assetlog.compose.postgres import PostgresCluster
from assetlog.compose.processes import StackError
from assetlog.compose.security import SecurityMaterial
from assetlog.config import ENV_KAFKA_BOOTSTRAP, ENV_POSTGRES_DSN, ENV_POSTGRES_READONLY_DSN, state_home

ENV_STACK_DIR = "ASSETLOG_STACK_DIR"
READONLY_ROLE = "assetlog_reader"  # created by `assetlog db migrate`


def stack_dir() -> Path:
    """Root keeps the stack in /var/lib (the postgres user must reach it); others in their state dir."""
    configured = os.environ.get(ENV_STACK_DIR)
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/lib/assetlog/stack")
    return state_home() / "stack"


_HELD: set[str] = set()  # stack locks this process holds (`LocalStack.alone`)


@dataclass
class LocalStack:
    """The local broker and database under one folder.

    A `secure` stack (its own folder, `<stack dir>-secure`) listens with
    SASL_SSL and TLS + passwords only; it is always local, whatever servers
    the environment names, since its point is to exercise those paths.
    """

    home: Path
    secure: bool = False

    @classmethod
    def default(cls, secure: bool = False) -> LocalStack:
        home = stack_dir()
        return cls(home.with_name(home.name + "-secure"), secure=True) if secure else cls(home)

    @property
    def security(self) -> SecurityMaterial | None:
        return SecurityMaterial.ensure(self.home / "security") if self.secure else None

    @property
    def kafka(self) -> KafkaBroker:
        return KafkaBroker(self.home / "kafka", security=self.security)

    @property
    def postgres(self) -> PostgresCluster:
        return PostgresCluster(self.home / "postgres", security=self.security)

    @property
    def standby(self) -> PostgresCluster:
        """A streaming hot standby of `postgres` on its own port (`stack up --standby`)."""
        return PostgresCluster(self.home / "postgres-standby", primary=self.postgres)

    def _external(self, variable: str, local_value: str | None) -> str | None:
        if self.secure:
            return None
        value = os.environ.get(variable)
        return value if value and value != local_value else None

    def external_kafka(self) -> str | None:
        return self._external(ENV_KAFKA_BOOTSTRAP, self.kafka.bootstrap())

    def external_postgres(self) -> str | None:
        return self._external(ENV_POSTGRES_DSN, self.postgres.dsn())

    @contextmanager
    def alone(self) -> Iterator[None]:
        """No other process starts this stack meanwhile (re-entrant within a process). Two `up`s at once
        (two shells, or the test suite's two workers each making sure the stack runs) each saw no broker
        and started one: the second could not open the data the first held and overwrote its pid file,
        so the running broker was nobody's and the next `up` found its port taken."""
        path = str(self.home / "stack.lock")
        if path in _HELD:
            yield
            return
        self.home.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _HELD.add(path)
            try:
                yield
            finally:
                _HELD.discard(path)

    def up(self, standby: bool = False) -> dict[str, object]:
        """Start what is not configured elsewhere and not already running; idempotent.
        With `standby`, also a hot standby of the local PostgreSQL that queries can read."""
        with self.alone():
            return self._up(standby)

    def _up(self, standby: bool) -> dict[str, object]:
        started = time.monotonic()
        if os.geteuid() == 0:
            os.chmod(self.home, 0o755)
            os.chmod(self.home.parent, 0o755)
        result: dict[str, object] = {}
        external = self.external_kafka()
        result["kafka"] = {"bootstrap": external, "external": True} if external else self.kafka.start()
        external = self.external_postgres()
        try:
            result["postgres"] = {"dsn": external, "external": True} if external else self.postgres.start()
        except Exception:
            # Leave nothing half-started: a broker we just started goes down again.
            kafka = result["kafka"]
            if isinstance(kafka, dict) and kafka.get("reused") is False:
                self.kafka.stop()
            raise
        if standby:
            if self.secure or self.external_postgres():
                raise StackError("--standby replicates the local PostgreSQL of the plain stack only")
            result["standby"] = self.standby.start()
        result["seconds"] = round(time.monotonic() - started, 2)
        return result

    def down(self, purge: bool = False) -> dict[str, object]:
        """Stop only what `up` started; `purge` also deletes data, ports and logs."""
        stopped = {"kafka": self.kafka.stop()}
        if self.standby.running_pid():  # a standby (`up --standby`) goes down before its primary
            stopped["standby"] = self.standby.stop()
        stopped["postgres"] = self.postgres.stop()
        if purge:
            shutil.rmtree(self.home, ignore_errors=True)
        return {"stopped": stopped, "purged": purge}

    def status(self) -> dict[str, object]:
        kafka_external = self.external_kafka()
        kafka_pid = self.kafka.running_pid()
        bootstrap = kafka_external or self.kafka.bootstrap()
        postgres_external = self.external_postgres()
        postgres_pid = self.postgres.running_pid()
        dsn = postgres_external or self.postgres.dsn()
        return {
            "kafka": {
                "bootstrap": bootstrap,
                "external": bool(kafka_external),
                "pid": kafka_pid,
                "running": bool(kafka_pid) or bool(kafka_external),
                "reachable": bool(bootstrap) and (bool(kafka_pid) or bool(kafka_external))
                and kafka_available(str(bootstrap), timeout=3, client_config=self.kafka.client_config()),
                "log": None if kafka_external else str(self.kafka.home / "server.log"),
            },
            "postgres": {
                "dsn": dsn,
                "external": bool(postgres_external),
                "pid": postgres_pid,
                "running": bool(postgres_pid) or bool(postgres_external),
                "reachable": bool(dsn) and _postgres_reachable(str(dsn)),
                "log": None if postgres_external else str(self.postgres.log_file),
            },
            "home": str(self.home),
            **({"standby": self._standby_status()} if self.standby.running_pid() else {}),
        }

    def _standby_status(self) -> dict[str, object]:
        standby = self.standby
        info: dict[str, object] = {"dsn": standby.dsn(), "pid": standby.running_pid(), "log": str(standby.log_file)}
        try:
            info.update(standby.replication(), reachable=True)
        except Exception as exc:  # reported, not raised: status describes whatever state there is
            info.update(reachable=False, error=str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
        return info

    def env(self) -> dict[str, str]:
        """The variables for the running stack (or the configured servers); a secure stack adds
        its SASL_SSL settings, and its DSNs carry passwords and `sslmode=verify-full`."""
        bootstrap = self.external_kafka() or (self.kafka.bootstrap() if self.kafka.running_pid() else None)
        dsn = self.external_postgres() or (self.postgres.dsn() if self.postgres.running_pid() else None)
        if not bootstrap or not dsn:
            raise StackError("the local stack is not running: start it with `assetlog stack up`")
        variables = {ENV_KAFKA_BOOTSTRAP: bootstrap, ENV_POSTGRES_DSN: dsn}
        if self.security is not None:
            variables.update(self.security.kafka_client_settings())
        if not self.external_postgres():
            # `stack up` migrates the local database, which creates the read-only role. Queries go to
            # the hot standby when one runs: that is what it is for.
            reader = self.standby if self.standby.running_pid() else self.postgres
            variables[ENV_POSTGRES_READONLY_DSN] = reader.dsn(user=READONLY_ROLE) or ""
        return variables


def _postgres_reachable(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def shell_exports(variables: dict[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in variables.items())
