"""Kafka authentication and TLS failures, told in one line that names the setting to check.

librdkafka reports a refused password or an untrusted broker certificate only
through its error callback and log, while the call that failed just times out
with "broker transport failure". A client built with `AccessWatch` as its
`error_cb` remembers such a failure, so the caller can fail at once with the
reason instead of waiting out its timeout.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError

from assetlog.errors import AssetlogError

_TLS_MARKERS = ("certificate verify failed", "SSL handshake failed", "ssl.ca.location")


class KafkaAccessError(AssetlogError):
    """The broker refused our credentials, or we refused its certificate."""


def describe_access_error(error: KafkaError, bootstrap: str) -> str | None:
    """One line for an authentication or TLS failure, None for any other error."""
    text = error.str()
    if error.code() == KafkaError._AUTHENTICATION:
        reason = text.split("SASL authentication error:", 1)[-1].split("(after", 1)[0].strip()
        return (f"Kafka at {bootstrap} refused the credentials ({reason}): check ASSETLOG_KAFKA_SASL_USERNAME, "
                "ASSETLOG_KAFKA_SASL_PASSWORD and ASSETLOG_KAFKA_SASL_MECHANISM")
    if error.code() == KafkaError._SSL or any(marker in text for marker in _TLS_MARKERS):
        return (f"TLS with Kafka at {bootstrap} failed (the broker's certificate could not be verified): "
                "check that ASSETLOG_KAFKA_SSL_CA_LOCATION names the CA that signed it")
    return None


class AccessWatch:
    """An `error_cb` that keeps the first authentication or TLS failure."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.failure: str | None = None

    def __call__(self, error: KafkaError) -> None:
        if self.failure is None:
            self.failure = describe_access_error(error, self.bootstrap)

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise KafkaAccessError(self.failure)

    def client_settings(self) -> dict[str, object]:
        """Settings that route the client's errors here and keep its log lines off stderr."""
        return {"error_cb": self, "logger": _quiet_logger()}


def _quiet_logger() -> logging.Logger:
    logger = logging.getLogger("assetlog.kafka.client")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    return logger


__all__ = ["AccessWatch", "KafkaAccessError", "describe_access_error"]
