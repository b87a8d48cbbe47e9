"""Configuration from the environment, shared by every stage.

Everything that points Assetlog at infrastructure is an environment variable
named after what it configures, so the same code runs against the local stack
(`eval "$(assetlog stack env)"`) or any Kafka and PostgreSQL a user already has.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from assetlog.errors import ConfigError

ENV_KAFKA_BOOTSTRAP = "ASSETLOG_KAFKA_BOOTSTRAP"
ENV_POSTGRES_DSN = "ASSETLOG_POSTGRES_DSN"
ENV_POSTGRES_READONLY_DSN = "ASSETLOG_POSTGRES_READONLY_DSN"
ENV_TOPIC_PREFIX = "ASSETLOG_TOPIC_PREFIX"
ENV_OUTBOX_DIR = "ASSETLOG_OUTBOX_DIR"
ENV_KAFKA_CONFIG_FILE = "ASSETLOG_KAFKA_CONFIG_FILE"
ENV_CONSUMER_SLOT = "ASSETLOG_CONSUMER_SLOT"
ENV_OUTBOX_FULL = "ASSETLOG_OUTBOX_FULL"
ENV_OUTBOX_FULL_WAIT = "ASSETLOG_OUTBOX_FULL_WAIT_SECONDS"
ENV_OUTBOX_COMMIT_WINDOW = "ASSETLOG_OUTBOX_COMMIT_WINDOW_MS"
KAFKA_SETTING_PREFIX = "ASSETLOG_KAFKA_"
# Variables under ASSETLOG_KAFKA_ that are Assetlog's own, not librdkafka settings.
_OWN_KAFKA_VARIABLES = {ENV_KAFKA_BOOTSTRAP, ENV_KAFKA_CONFIG_FILE}

DEFAULT_TOPIC_PREFIX = "assetlog"
NO_CONSUMER_SLOT = "none"  # ASSETLOG_CONSUMER_SLOT=none: dynamic group membership, as before static became the default
MAX_CONSUMER_SLOT = 9999
# When the outbox's file system is full, a task run ending waits for room ("block", at most
# OUTBOX_FULL_WAIT seconds, then fails) or fails at once ("fail"): never returns with its
# events unrecorded. Blocking is the default: a few minutes are usually enough to make room,
# and a run that fails afterwards has lost nothing silently.
OUTBOX_FULL_MODES = ("block", "fail")
DEFAULT_OUTBOX_FULL = "block"
DEFAULT_OUTBOX_FULL_WAIT = 300.0
# How long the outbox writer may hold finished task runs in memory to commit them together
# (milliseconds; 0 commits as soon as the writer gets to them). A flow's end, a flush, a
# caller waiting for durability and a long queue all cut it short; so only a process killed
# outright (SIGKILL, power cut) can lose what it held. See docs/producer.md, "The outbox".
DEFAULT_OUTBOX_COMMIT_WINDOW_MS = 20.0
MAX_OUTBOX_COMMIT_WINDOW_MS = 1000.0


def _outbox_full_policy(environ: Mapping[str, str]) -> tuple[str, float]:
    mode = (environ.get(ENV_OUTBOX_FULL) or DEFAULT_OUTBOX_FULL).strip().lower()
    if mode not in OUTBOX_FULL_MODES:
        raise ConfigError(f"{ENV_OUTBOX_FULL}={environ[ENV_OUTBOX_FULL]!r}: expected one of "
                          f"{', '.join(OUTBOX_FULL_MODES)}")
    raw = environ.get(ENV_OUTBOX_FULL_WAIT)
    if not raw:
        return mode, DEFAULT_OUTBOX_FULL_WAIT
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait < float("inf"):
        raise ConfigError(f"{ENV_OUTBOX_FULL_WAIT}={raw!r}: expected a number of seconds (0 or more)")
    return mode, wait


def _outbox_commit_window(environ: Mapping[str, str]) -> float:
    """ASSETLOG_OUTBOX_COMMIT_WINDOW_MS, in seconds."""
    raw = environ.get(ENV_OUTBOX_COMMIT_WINDOW)
    if not raw:
        return DEFAULT_OUTBOX_COMMIT_WINDOW_MS / 1000
    try:
        window = float(raw)
    except ValueError:
        window = -1.0
    if not 0 <= window <= MAX_OUTBOX_COMMIT_WINDOW_MS:
        raise ConfigError(f"{ENV_OUTBOX_COMMIT_WINDOW}={raw!r}: expected milliseconds from 0 to "
                          f"{MAX_OUTBOX_COMMIT_WINDOW_MS:g}")
    return window / 1000


def state_home(environ: Mapping[str, str] | None = None) -> Path:
    """Where Assetlog keeps state that must survive restarts (outbox, local stack)."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "assetlog"


def cache_home(environ: Mapping[str, str] | None = None) -> Path:
    """Where downloads that can be fetched again live (Kafka jars)."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "assetlog"


@dataclass(frozen=True)
class Topics:
    """Topic names for one prefix; events of one asset share a partition via the key."""

    prefix: str = DEFAULT_TOPIC_PREFIX

    @property
    def materializations(self) -> str:
        return f"{self.prefix}.materializations"

    @property
    def dependencies(self) -> str:
        return f"{self.prefix}.dependencies"

    @property
    def metadata(self) -> str:
        return f"{self.prefix}.metadata"

    @property
    def events(self) -> tuple[str, str, str]:
        """The three event topics, in a fixed order."""
        return (self.materializations, self.dependencies, self.metadata)

    @staticmethod
    def dead_letter(topic: str) -> str:
        """The dead-letter topic for an event topic."""
        return f"{topic}.dlq"


def parse_properties_file(path: Path) -> dict[str, str]:
    """Read a Java-style `key=value` file (librdkafka's usual client config)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{ENV_KAFKA_CONFIG_FILE}={path}: cannot read it ({exc.strerror})") from exc
    settings: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        sep = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        if sep <= 0:
            raise ConfigError(f"{path}:{number}: expected 'setting=value', got {line!r}")
        settings[line[:sep].strip()] = line[sep + 1 :].strip()
    return settings


def parse_consumer_slot(text: str, origin: str) -> int | str:
    """`auto`, `none` or a slot number 0..MAX_CONSUMER_SLOT; `origin` names where the text came from."""
    value = text.strip().lower()
    if value in ("auto", NO_CONSUMER_SLOT):
        return value
    if value.isascii() and value.isdigit() and int(value) <= MAX_CONSUMER_SLOT:
        return int(value)
    raise ConfigError(f"{origin}={text!r}: expected a slot number 0..{MAX_CONSUMER_SLOT}, 'auto' or "
                      f"'{NO_CONSUMER_SLOT}'")


@dataclass(frozen=True)
class Settings:
    """Resolved configuration; build it with `Settings.from_env()`."""

    kafka_bootstrap: str | None = None
    postgres_dsn: str | None = None
    postgres_readonly_dsn: str | None = None
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    outbox_dir: Path = field(default_factory=lambda: state_home() / "outbox")
    kafka_settings: Mapping[str, str] = field(default_factory=dict)
    # Static group membership for consumers: "auto" claims the lowest free slot on this host, a
    # number asks for that slot, "none" joins dynamically (see consumers/membership.py).
    consumer_slot: int | str = "auto"
    consumer_lock_dir: Path = field(default_factory=lambda: state_home() / "consumers")
    outbox_full: str = DEFAULT_OUTBOX_FULL
    outbox_full_wait: float = DEFAULT_OUTBOX_FULL_WAIT
    outbox_commit_window: float = DEFAULT_OUTBOX_COMMIT_WINDOW_MS / 1000  # seconds

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        kafka_settings: dict[str, str] = {}
        config_file = environ.get(ENV_KAFKA_CONFIG_FILE)
        if config_file:
            kafka_settings.update(parse_properties_file(Path(config_file)))
        for name, value in environ.items():
            if name.startswith(KAFKA_SETTING_PREFIX) and name not in _OWN_KAFKA_VARIABLES:
                setting = name[len(KAFKA_SETTING_PREFIX) :].lower().replace("_", ".")
                if setting:
                    kafka_settings[setting] = value
        prefix = environ.get(ENV_TOPIC_PREFIX) or DEFAULT_TOPIC_PREFIX
        if not all(c.isalnum() or c in "._-" for c in prefix) or len(prefix) > 200:
            raise ConfigError(
                f"{ENV_TOPIC_PREFIX}={prefix!r}: a topic prefix may use only letters, digits, '.', '_' and '-'"
            )
        outbox = environ.get(ENV_OUTBOX_DIR)
        outbox_full, outbox_full_wait = _outbox_full_policy(environ)
        return cls(
            kafka_bootstrap=environ.get(ENV_KAFKA_BOOTSTRAP) or None,
            postgres_dsn=environ.get(ENV_POSTGRES_DSN) or None,
            postgres_readonly_dsn=environ.get(ENV_POSTGRES_READONLY_DSN) or None,
            topic_prefix=prefix,
            outbox_dir=Path(outbox) if outbox else state_home(environ) / "outbox",
            kafka_settings=kafka_settings,
            consumer_slot=parse_consumer_slot(environ.get(ENV_CONSUMER_SLOT) or "auto", ENV_CONSUMER_SLOT),
            consumer_lock_dir=state_home(environ) / "consumers",
            outbox_full=outbox_full,
            outbox_full_wait=outbox_full_wait,
            outbox_commit_window=_outbox_commit_window(environ),
        )

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap:
            raise ConfigError(
                f"{ENV_KAFKA_BOOTSTRAP} is not set: start the local stack and run "
                '`eval "$(assetlog stack env)"`, or set it to your brokers (host:port,...)'
            )
        return self.kafka_bootstrap

    def require_postgres(self) -> str:
        if not self.postgres_dsn:
            raise ConfigError(
                f"{ENV_POSTGRES_DSN} is not set: start the local stack and run "
                '`eval "$(assetlog stack env)"`, or set it to a libpq connection string'
            )
        return self.postgres_dsn

    def kafka_client_config(
        self, defaults: Mapping[str, object] | None = None, required: Mapping[str, object] | None = None
    ) -> dict[str, object]:
        """librdkafka config: bootstrap, then `defaults`, then the user's pass-through
        settings (SASL/SSL, tuning), then `required`.

        Users may tune anything Assetlog merely prefers, but not the settings a
        component needs for correctness (e.g. `enable.auto.commit=false`).
        """
        config: dict[str, object] = {"bootstrap.servers": self.require_kafka()}
        config.update(defaults or {})
        config.update(self.kafka_settings)
        config.update(required or {})
        return config
