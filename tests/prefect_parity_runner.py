"""Run parity scenarios under real Prefect and print their asset events as JSON.

    python tests/prefect_parity_runner.py SCENARIO...

Started by `test_prefect_parity.py` in a subprocess with a temporary PREFECT_HOME
(Prefect then runs its own temporary local API; no server of ours is involved).
Asset events are captured with Prefect's own test client (`AssertingEventsClient`,
what Prefect's asset tests use) instead of being sent anywhere.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def normalized(event: Any) -> dict[str, Any]:
    """A materialization event as `test_prefect_parity.normalized_*` compares it."""
    wire = json.loads(event.model_dump_json())
    resource = wire["resource"]
    labels = {"prefect.resource.name": "name", "prefect.asset.description": "description",
              "prefect.asset.url": "url", "prefect.asset.owners": "owners"}
    properties = {field: (json.loads(resource[label]) if field == "owners" else resource[label])
                  for label, field in labels.items() if label in resource}
    task_runs = [r["prefect.resource.id"] for r in wire["related"]
                 if r["prefect.resource.id"].startswith("prefect.task-run.")]
    return {
        "run": task_runs[0] if task_runs else None,
        "key": resource["prefect.resource.id"],
        "status": wire["event"].rsplit(".", 1)[1].upper(),
        "upstreams": sorted({r["prefect.resource.id"] for r in wire["related"]
                             if r["prefect.resource.role"] == "asset"}),
        "metadata": wire["payload"] or None,
        "properties": properties or None,
    }


def main(names: list[str]) -> int:
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker

    new_worker = EventsWorker.instance
    current: list[EventsWorker] = []
    # As Prefect's `asserting_events_worker` fixture: every emitter gets the capturing worker.
    EventsWorker.instance = lambda *_args, **_kwargs: current[-1]  # type: ignore[method-assign,assignment]

    import prefect
    from parity_scenarios import SCENARIOS
    from prefect.assets import Asset, AssetProperties, add_asset_metadata, materialize

    @prefect.flow
    def warm_up() -> None:
        """Start Prefect's temporary local API before the first scenario's clock runs."""

    for attempt in range(3):
        try:
            warm_up()
            break
        except RuntimeError:
            if attempt == 2:
                raise

    results: dict[str, Any] = {}
    for name in names:
        api = SimpleNamespace(flow=prefect.flow, task=prefect.task, materialize=materialize, Asset=Asset,
                              AssetProperties=AssetProperties, add_asset_metadata=add_asset_metadata, notes=[])
        current.append(new_worker(AssertingEventsClient))  # a fresh one per scenario, as per test
        worker = current[-1]
        error = None
        try:
            SCENARIOS[name](api)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        worker.drain()
        events = [normalized(e) for e in getattr(worker._client, "events", [])
                  if e.event.startswith("prefect.asset.materialization.")]
        results[name] = {"events": events, "notes": api.notes, "error": error}
    print("PARITY-RESULTS " + json.dumps(results, default=repr))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
