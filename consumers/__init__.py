"""Kafka -> batches -> projections -> PostgreSQL.

Runners own the Kafka consumer, batching, offsets (stored in PostgreSQL in the
same transaction as the projection's writes), signals and dead letters. They
know nothing about what the tables mean.
"""

from assetlog.consumers.batch import Batch, DeadLetter, build_batch, classify, event_types_by_topic
from assetlog.consumers.dead_letters import DeadLetterError, DeadLetterPublisher, dead_letter_headers
from assetlog.consumers.offsets import OffsetStore
from assetlog.consumers.retry import RETRYABLE, Backoff
from assetlog.consumers.runner import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCH_TIMEOUT,
    ProjectionRunner,
    RunStats,
    run_until_caught_up,
    tune_interpreter,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_BATCH_TIMEOUT",
    "RETRYABLE",
    "Backoff",
    "Batch",
    "DeadLetter",
    "DeadLetterError",
    "DeadLetterPublisher",
    "OffsetStore",
    "ProjectionRunner",
    "RunStats",
    "build_batch",
    "classify",
    "dead_letter_headers",
    "event_types_by_topic",
    "run_until_caught_up",
    "tune_interpreter",
]
