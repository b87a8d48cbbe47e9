"""Kafka authentication and TLS failures, told in one line that names the setting to check.

librdkafka reports a refused password or an untrusted broker certificate only
through its error callback and log, while the call that failed just times out
with "broker transport failure". A client built with `AccessWatch` as its
`error_cb` remembers such a failure, so the caller can fail at once with the
reason instead of waiting out its timeout.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from assetlog.errors import AssetlogError

_TLS_MARKERS = ("certificate verify failed", "SSL handshake failed", "ssl.ca.location")


class KafkaAccessError(AssetlogError):
    """The broker refused our credentials, or we refused its certificate."""


class KafkaUnreachable(AssetlogError):
    """No answer from the broker within the time allowed (no access failure was reported)."""


def describe_access_error(error: KafkaError, bootstrap: str, username: str | None = None) -> str | None:
    """One line for an authentication or TLS failure, None for any other error."""
    text = error.str()
    if error.code() == KafkaError._AUTHENTICATION:
        reason = text.split("SASL authentication error:", 1)[-1].split("(after", 1)[0].strip()
        who = f" of user {username}" if username else ""
        return (f"Kafka at {bootstrap} refused the credentials{who} ({reason}): check "
                "ASSETLOG_KAFKA_SASL_USERNAME, ASSETLOG_KAFKA_SASL_PASSWORD and ASSETLOG_KAFKA_SASL_MECHANISM")
    if error.code() == KafkaError._SSL or any(marker in text for marker in _TLS_MARKERS):
        return (f"TLS with Kafka at {bootstrap} failed (the broker's certificate could not be verified): "
                "check that ASSETLOG_KAFKA_SSL_CA_LOCATION names the CA that signed it")
    return None


class AccessWatch:
    """An `error_cb` that keeps the first authentication or TLS failure."""

    def __init__(self, bootstrap: str, username: str | None = None, debug: bool = False) -> None:
        self.bootstrap = bootstrap
        self.username = username
        self.debug = debug  # librdkafka's `debug` contexts are on: its log lines are wanted
        self.failure: str | None = None
        self._log: logging.Logger | None = None
        self._last_logged: str | None = None

    @classmethod
    def for_settings(cls, settings: Any) -> AccessWatch:
        """A watch naming the broker and SASL user `settings` (an `assetlog.config.Settings`) connect with."""
        return cls(settings.require_kafka(), settings.kafka_settings.get("sasl.username"),
                   debug=bool(settings.kafka_settings.get("debug")))

    def log_to(self, log: logging.Logger) -> None:
        """From now on, log each error as one warning line (a repeat of the last one is not logged again).

        For a long-running client once it is connected: its own log lines stay silenced
        (`client_settings`), so a broker going away or a password rotated later still shows up.
        """
        self._log = log

    def __call__(self, error: KafkaError) -> None:
        described = describe_access_error(error, self.bootstrap, self.username)
        if self.failure is None:
            self.failure = described
        if self._log is not None:
            line = described or error.str()
            if line != self._last_logged:
                self._last_logged = line
                self._log.warning("Kafka: %s", line)

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise KafkaAccessError(self.failure)

    def list_topics(self, client: Any, timeout: float = 30.0) -> dict[str, Any]:
        """The broker's topics (name -> metadata) through `client`, a Consumer or AdminClient built with
        `client_settings()` that has not subscribed yet.

        Asks in short rounds and serves the error callback between them, so a refused password or
        certificate fails within a second or two with its reason (`KafkaAccessError`), not after
        `timeout` as a transport failure; a broker that stays away for `timeout` is `KafkaUnreachable`.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                return client.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic()))).topics
            except KafkaException as exc:
                client.poll(0)  # serves the error callback, which holds an access failure's reason
                self.raise_if_failed()
                if time.monotonic() >= deadline:
                    raise KafkaUnreachable(f"cannot reach Kafka at {self.bootstrap}: {exc.args[0]}") from exc

    def client_settings(self) -> dict[str, object]:
        """Settings that route the client's errors here and keep its log lines off stderr, unless
        the user turned librdkafka's debug contexts on (ASSETLOG_KAFKA_DEBUG=cgrp,fetch,...): then
        its lines go to the `assetlog.kafka.debug` logger, so they land in the process's own log."""
        return {"error_cb": self, "logger": _debug_logger() if self.debug else _quiet_logger()}


def _quiet_logger() -> logging.Logger:
    logger = logging.getLogger("assetlog.kafka.client")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    return logger


def _debug_logger() -> logging.Logger:
    """A logger passing librdkafka's debug lines (logged at DEBUG) to the process's handlers, whatever
    level those are set to: asking for debug contexts is asking for their lines."""
    logger = logging.getLogger("assetlog.kafka.debug")
    logger.setLevel(logging.DEBUG)
    return logger


__all__ = ["AccessWatch", "KafkaAccessError", "KafkaUnreachable", "describe_access_error"]
