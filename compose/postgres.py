"""A private local PostgreSQL cluster from Debian's `postgresql` package.

Own data directory and port, trust authentication on 127.0.0.1 only, no unix
socket. PostgreSQL refuses to run as root, so as root the cluster belongs to
the `postgres` user and lives where that user can reach it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from assetlog.compose.processes import StackError, free_port, port_is_free, tail
from assetlog.compose.security import SecurityMaterial

DATABASE = "assetlog"
SUPERUSER = "postgres"
ENV_SHARED_BUFFERS = "ASSETLOG_STACK_POSTGRES_SHARED_BUFFERS"


def memory_options(total_bytes: int, shared_buffers: str | None = None) -> list[str]:
    """Server settings sized to the machine, as PostgreSQL's own tuning advice goes: a quarter of the
    memory for shared_buffers (at least 128 MB, at most 8 GB) and half of it as effective_cache_size.
    The 256 MB this stack used before held a tenth of a 10M-edge graph's read path, so a walk's pages
    fell back on the OS cache, which other work on the machine evicts (bench/README.md, "Graph at 10M
    edges"). `ASSETLOG_STACK_POSTGRES_SHARED_BUFFERS` (PostgreSQL's units, e.g. 2GB) overrides."""
    mib = total_bytes // 2**20
    buffers = shared_buffers or f"{min(max(mib // 4, 128), 8192)}MB"
    return [f"-c shared_buffers={buffers}", f"-c effective_cache_size={max(mib // 2, 256)}MB"]


def _machine_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key, reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parts[-3])
    except (ValueError, IndexError):
        return 0


def ensure_postgres_installed() -> Path:
    """Find PostgreSQL's server binaries, installing Debian's package when missing."""
    bindir = _bindir()
    if bindir:
        return bindir
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise StackError("PostgreSQL is not installed: run `apt-get install postgresql` as root, "
                         "or set ASSETLOG_POSTGRES_DSN to a server you have")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (["apt-get", "update", "-q"],
             ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"])
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise StackError(f"`{' '.join(step)}` failed: {tail(result.stdout + result.stderr, 2)}")
    # Debian's package starts its own cluster on 5432; ours is private, leave theirs alone.
    bindir = _bindir()
    if not bindir:
        raise StackError("apt-get installed postgresql but no initdb was found under /usr/lib/postgresql")
    return bindir


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", SUPERUSER, "--", *command]
    return command


@dataclass
class PostgresCluster:
    """The cluster's files: data directory, log, port.

    With `security` it accepts only TLS connections with scram-sha-256
    passwords (`hostssl` is the only line of its pg_hba.conf), and its DSNs
    ask for `sslmode=verify-full` against the stack's CA.
    """

    home: Path
    security: SecurityMaterial | None = None
    primary: PostgresCluster | None = None  # set for a hot standby streaming from that cluster

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def port_file(self) -> Path:
        return self.home / "port"

    @property
    def log_file(self) -> Path:
        return self.home / "postgres.log"

    def port(self) -> int | None:
        try:
            return int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def dsn(self, database: str = DATABASE, user: str = SUPERUSER) -> str | None:
        port = self.port()
        if not port:
            return None
        if self.security is None:
            return f"postgresql://{user}@127.0.0.1:{port}/{database}"
        password = self.password(user)
        return (f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}"
                f"?sslmode=verify-full&sslrootcert={self.security.ca_file}")

    def password(self, user: str) -> str:
        """The secure cluster's password for the superuser or the read-only role."""
        assert self.security is not None
        passwords = self.security.passwords()
        return passwords["postgres"] if user == SUPERUSER else passwords["postgres_reader"]

    def _secure_files(self) -> list[str]:
        """Copy the certificate and key where the server's owner can read them; returns server options."""
        if self.security is None:
            return []
        files = {"server.crt": self.security.server_cert_file, "server.key": self.security.server_key_file}
        for name, source in files.items():
            target = self.home / name
            target.write_bytes(source.read_bytes())
            os.chmod(target, 0o600)
            if os.geteuid() == 0:
                shutil.chown(target, SUPERUSER, SUPERUSER)
        hba = self.home / "pg_hba.conf"
        hba.write_text("# TLS and scram-sha-256 passwords only, from this machine only\n"
                       "hostssl all all 127.0.0.1/32 scram-sha-256\n", encoding="utf-8")
        return [f"-c ssl=on -c ssl_cert_file={self.home / 'server.crt'} -c ssl_key_file={self.home / 'server.key'}",
                f"-c hba_file={hba} -c password_encryption=scram-sha-256"]

    def _initdb_auth(self) -> list[str]:
        if self.security is None:
            return ["--auth=trust"]
        password_file = self.home / "initdb-password"
        password_file.write_text(self.password(SUPERUSER) + "\n", encoding="utf-8")
        os.chmod(password_file, 0o600)
        if os.geteuid() == 0:
            shutil.chown(password_file, SUPERUSER, SUPERUSER)
        return ["--auth=scram-sha-256", f"--pwfile={password_file}"]

    def set_password(self, role: str) -> None:
        """Give a role (the read-only one, once `db migrate` made it) its secure-stack password."""

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(self.password(role))))

    def running_pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"postgres" in cmdline else None

    def _prepare_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.home, SUPERUSER, SUPERUSER)
            reachable = subprocess.run(_as_owner(["test", "-w", str(self.home)]), check=False).returncode == 0
            if not reachable:
                raise StackError(f"the postgres user cannot reach {self.home} (PostgreSQL refuses to run as root): "
                                 "set ASSETLOG_STACK_DIR to a folder under a world-traversable parent, e.g. /var/lib")

    def start(self) -> dict[str, object]:
        started = time.monotonic()
        pid = self.running_pid()
        if pid:
            return {"dsn": self.dsn(), "pid": pid, "reused": True, "seconds": 0.0}
        bindir = ensure_postgres_installed()
        self._prepare_home()
        port = self.port()
        if port is None:
            port = free_port()
            self.port_file.write_text(f"{port}\n")
        elif not port_is_free(port):
            raise StackError(f"port {port} that the local PostgreSQL uses is taken by another process: stop it, "
                             "or run `assetlog stack down --purge` to start afresh on a new port")
        if not (self.data_dir / "PG_VERSION").exists() and self.primary is not None:
            self._clone_primary(bindir)
        elif not (self.data_dir / "PG_VERSION").exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)
            init = subprocess.run(
                _as_owner([str(bindir / "initdb"), "-D", str(self.data_dir), *self._initdb_auth(),
                           f"--username={SUPERUSER}", "--encoding=UTF8", "--locale=C.UTF-8"]),
                capture_output=True, text=True, check=False,
            )
            if init.returncode != 0:
                raise StackError(f"initdb failed: {tail(init.stdout + init.stderr, 3)}")
        stale = self.data_dir / "postmaster.pid"
        if stale.exists():
            stale.unlink()  # the process it names is gone (checked above)
        options = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                   "-c max_connections=200 -c fsync=on")
        options = " ".join([options, *memory_options(_machine_memory(), os.environ.get(ENV_SHARED_BUFFERS) or None),
                            *self._preload(bindir), *self._secure_files()])
        result = subprocess.run(
            _as_owner([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                       "-o", options, "-w", "-t", "60", "start"]),
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
            raise StackError(f"PostgreSQL did not start: {tail(log or result.stderr, 2)}")
        if self.primary is None:  # a standby has the primary's databases, and cannot create any
            self._create_database(port)
        return {"dsn": self.dsn(), "pid": self.running_pid(), "reused": False,
                "seconds": round(time.monotonic() - started, 2)}

    @staticmethod
    def _preload(bindir: Path) -> list[str]:
        """pg_prewarm's worker, when the server has it: it records what shared buffers hold and loads it
        again after a restart, so a restart does not leave every walk reading from disk (`assetlog db
        warm` loads the read path on demand)."""
        library = subprocess.run([str(bindir / "pg_config"), "--pkglibdir"], capture_output=True, text=True,
                                 check=False).stdout.strip() if (bindir / "pg_config").exists() else ""
        candidates = [Path(library)] if library else []
        candidates.append(bindir.parent / "lib")
        if any((folder / "pg_prewarm.so").exists() for folder in candidates):
            return ["-c shared_preload_libraries=pg_prewarm"]
        return []

    def _clone_primary(self, bindir: Path) -> None:
        """A base backup of the primary that starts as a streaming hot standby (`-R` writes
        `standby.signal` and `primary_conninfo`)."""
        assert self.primary is not None
        primary_port = self.primary.port()
        if primary_port is None or not self.primary.running_pid():
            raise StackError("the standby needs the local PostgreSQL running: run `assetlog stack up` first")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        backup = subprocess.run(
            _as_owner([str(bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary_port), "-U", SUPERUSER,
                       "-D", str(self.data_dir), "-R", "-X", "stream", "-c", "fast"]),
            capture_output=True, text=True, check=False,
        )
        if backup.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise StackError(f"pg_basebackup from the primary failed: {tail(backup.stdout + backup.stderr, 2)}")

    def replication(self) -> dict[str, object]:
        """A standby's distance behind its primary: WAL bytes not yet replayed, and the primary's own
        measure of the replay lag (what `stack status` shows)."""

        assert self.primary is not None
        with psycopg.connect(self.primary.dsn("postgres"), connect_timeout=5, autocommit=True) as primary:
            current, replay_lag = primary.execute(
                "SELECT pg_current_wal_lsn()::text, (SELECT EXTRACT(epoch FROM replay_lag) FROM pg_stat_replication "
                "ORDER BY replay_lsn LIMIT 1)").fetchone()
        with psycopg.connect(self.dsn("postgres"), connect_timeout=5, autocommit=True) as standby:
            in_recovery, behind = standby.execute(
                "SELECT pg_is_in_recovery(), pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())",
                (current,)).fetchone()
        return {"standby": in_recovery, "bytes_behind": max(0, int(behind or 0)),
                "replay_lag_seconds": None if replay_lag is None else round(float(replay_lag), 3)}

    def _create_database(self, port: int) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))

    def stop(self, mode: str = "fast") -> bool:
        if not self.running_pid():
            return False
        bindir = ensure_postgres_installed()
        subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]),
                       capture_output=True, text=True, check=False)
        return True

    def restart(self) -> None:
        """Fast restart (fault drills): connections drop, the port stays."""
        self.stop("fast")
        self.start()
