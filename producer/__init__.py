"""The write side: workflow code -> events.

Assets, `@materialize`, a small flow/task runtime that infers lineage from the
task graph, and the outbox + Kafka producer. It never reads Kafka or PostgreSQL.
"""

from assetlog.producer.assets import Asset, AssetProperties
from assetlog.producer.events import FinishedTaskRun, OutgoingEvent, events_for
from assetlog.producer.flows import Flow, flow
from assetlog.producer.futures import TaskFuture, TaskFutureList, UpstreamTaskError, unmapped, wait
from assetlog.producer.materialize import MaterializingTask, materialize
from assetlog.producer.metadata import add_asset_metadata
from assetlog.producer.publisher import FlushResult, Publisher
from assetlog.producer.publishing import current_publisher, publishing, use_settings
from assetlog.producer.runtime import current_flow_run, current_task_run
from assetlog.producer.tasks import Task, task

__all__ = [
    "Asset",
    "AssetProperties",
    "FinishedTaskRun",
    "Flow",
    "FlushResult",
    "MaterializingTask",
    "OutgoingEvent",
    "Publisher",
    "Task",
    "TaskFuture",
    "TaskFutureList",
    "UpstreamTaskError",
    "add_asset_metadata",
    "current_flow_run",
    "current_publisher",
    "current_task_run",
    "events_for",
    "flow",
    "materialize",
    "publishing",
    "task",
    "unmapped",
    "use_settings",
    "wait",
]
