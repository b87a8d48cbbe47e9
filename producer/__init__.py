"""The write side: workflow code -> events.

Assets, `@materialize`, a small flow/task runtime that infers lineage from the
task graph, and the outbox + Kafka producer. It never reads Kafka or PostgreSQL.
"""

from assetlog.producer.assets import Asset, AssetProperties
from assetlog.producer.context import current_flow_run, current_task_run
from assetlog.producer.event_builders import FinishedTaskRun, OutgoingEvent, events_for
from assetlog.producer.flows import Flow, flow
from assetlog.producer.futures import TaskFuture, TaskFutureList, UpstreamTaskError, unmapped, wait
from assetlog.producer.materialize import MaterializingTask, materialize
from assetlog.producer.metadata import add_asset_metadata
from assetlog.producer.outbox_metrics import register_metrics
from assetlog.producer.publisher import FlushResult, Publisher
from assetlog.producer.publisher_context import current_publisher, publishing, use_settings
from assetlog.producer.states import State
from assetlog.producer.tasks import Task, task
from assetlog.producer.timeouts import FlowRunTimeoutError, TaskRunTimeoutError

__all__ = [
    "Asset",
    "AssetProperties",
    "FinishedTaskRun",
    "Flow",
    "FlowRunTimeoutError",
    "FlushResult",
    "MaterializingTask",
    "OutgoingEvent",
    "Publisher",
    "State",
    "Task",
    "TaskFuture",
    "TaskFutureList",
    "TaskRunTimeoutError",
    "UpstreamTaskError",
    "add_asset_metadata",
    "current_flow_run",
    "current_publisher",
    "current_task_run",
    "events_for",
    "flow",
    "materialize",
    "publishing",
    "register_metrics",
    "task",
    "unmapped",
    "use_settings",
    "wait",
]


# Prefect names whose semantics need Prefect itself: importing one is refused with one line.
_NEEDS_PREFECT = {"transaction": "transactions need Prefect's result persistence"}


def __getattr__(name: str) -> object:
    if name in _NEEDS_PREFECT:
        raise ImportError(f"assetlog.producer has no `{name}`: {_NEEDS_PREFECT[name]}, which Assetlog's built-in "
                          "runtime does not have; run the flow with Prefect and the Assetlog bridge "
                          "(docs/prefect.md)")
    raise AttributeError(f"module 'assetlog.producer' has no attribute {name!r}")
