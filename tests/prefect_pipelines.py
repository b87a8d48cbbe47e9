"""Run in a subprocess by test_prefect_bridge.py, under REAL Prefect with the bridge plugin on.

`python prefect_pipelines.py RESULT_JSON BAD_OUTBOX_DIR` runs, in one process (Prefect's
import and its temporary server are slow):
1. the guide's six pipelines from `assetlog.examples`, with only their imports changed
   to Prefect's (`from prefect import flow`, `from prefect.assets import ...`);
2. a flow whose materializing task fails;
3. a small flow, recording Prefect's own asset events (through Prefect's
   `AssertingEventsClient`), later run again with the bridge off (5.);
4. after pointing ASSETLOG_OUTBOX_DIR at a directory that cannot be created, a flow whose
   materializing task must still succeed (the bridge only logs its error);
5. with the outbox usable again, a flow delivered only by the flush at interpreter exit;
6. the small flow of 3. with the bridge uninstalled: Prefect's events must be the same.
It writes what it saw to RESULT_JSON.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

PREFECT_NAMES = {"flow": "prefect"}  # everything else the examples import is in prefect.assets
FAILING_KEY = "s3://prefect-bridge-test/failing.csv"


def prefect_source(source: str) -> str:
    """`source` with its `from assetlog.producer import ...` replaced by Prefect's imports."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "assetlog.producer":
            names = [alias.name for alias in node.names]
            top = [n for n in names if PREFECT_NAMES.get(n) == "prefect"]
            assets = [n for n in names if n not in top]
            new = (f"from prefect import {', '.join(top)}\n" if top else "") + (
                f"from prefect.assets import {', '.join(assets)}\n" if assets else "")
            return "".join(lines[: node.lineno - 1]) + new + "".join(lines[node.end_lineno:])
    raise AssertionError("no `from assetlog.producer import ...` to replace")


def prefect_examples(folder: Path) -> list[Any]:
    """The six example flows, as Prefect flows, in the guide's order."""
    from prefect import Flow

    from assetlog.examples import example_flows

    flows = []
    package = resources.files("assetlog.examples")
    for builtin in example_flows():
        module_name = builtin.fn.__module__.rsplit(".", 1)[-1]
        path = folder / f"prefect_{module_name}.py"
        path.write_text(prefect_source(package.joinpath(f"{module_name}.py").read_text(encoding="utf-8")))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found = [value for value in vars(module).values() if isinstance(value, Flow)]
        assert len(found) == 1, (module_name, found)
        flows.append(found[0])
    return flows


def run_failing_flow() -> dict[str, Any]:
    from prefect import flow
    from prefect.assets import materialize

    @materialize(FAILING_KEY, asset_deps=["s3://prefect-bridge-test/input.csv"], by="pandas")
    def failing_task() -> None:
        raise ValueError("the input has no header row")

    @flow(name="failing-flow")
    def failing_flow() -> None:
        failing_task()

    state = failing_flow(return_state=True)
    return {"state": state.type.value}


def run_with_broken_outbox(bad_outbox: str) -> dict[str, Any]:
    """The publisher cannot start (its outbox cannot be created): the task must still succeed."""
    from prefect import flow
    from prefect.assets import materialize

    from assetlog.producer.publisher_context import current_publisher

    current_publisher().close()  # delivers what was published so far; the next one reads the env again
    os.environ["ASSETLOG_OUTBOX_DIR"] = bad_outbox

    @materialize("s3://prefect-bridge-test/unpublished.csv")
    def still_works() -> int:
        return 41

    @flow(name="broken-outbox-flow")
    def broken_outbox_flow() -> int:
        return still_works() + 1

    state = broken_outbox_flow(return_state=True)
    return {"state": state.type.value, "result": state.result(raise_on_failure=False)}


def run_flow_delivered_at_exit(good_outbox: str) -> None:
    """With the outbox usable again, a flow whose events only the publisher's flush at
    interpreter exit delivers (nothing else flushes it before the process ends)."""
    from prefect import flow
    from prefect.assets import materialize

    os.environ["ASSETLOG_OUTBOX_DIR"] = good_outbox

    @materialize("s3://prefect-bridge-test/at-exit.csv")
    def last_task() -> None:
        pass

    @flow(name="at-exit-flow")
    def at_exit_flow() -> None:
        last_task()

    at_exit_flow()


def prefect_asset_events(bridge_on: bool) -> list[dict[str, Any]]:
    """Prefect's own asset events for one small flow, ids, times and run resources left out."""
    from prefect import flow, task
    from prefect.assets import Asset, AssetProperties, add_asset_metadata, materialize
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker

    from assetlog.integrations.prefect import bridge

    if not bridge_on:
        bridge.uninstall()
    AssertingEventsClient.reset()
    EventsWorker.set_client_override(AssertingEventsClient)
    try:
        @materialize(Asset(key="s3://prefect-bridge-test/raw", properties=AssetProperties(name="Raw")))
        def extract() -> list[int]:
            return [1, 2]

        @task(asset_deps=[Asset(key="s3://prefect-bridge-test/ext", properties=AssetProperties(name="Ext"))])
        def read_external() -> list[int]:
            return [3]

        @materialize(Asset(key="s3://prefect-bridge-test/out.csv", properties=AssetProperties(name="Out")),
                     asset_deps=[Asset(key="s3://prefect-bridge-test/table", properties=AssetProperties(owners=["x"]))],
                     by="duckdb")
        def load(rows: list[int], more: list[int]) -> None:
            add_asset_metadata("s3://prefect-bridge-test/out.csv", {"rows": len(rows) + len(more)})

        @flow(name="events-flow")
        def events_flow() -> None:
            load(extract(), read_external())

        events_flow()
        EventsWorker.drain_all()
        events = [e for client in AssertingEventsClient.all for e in client.events
                  if e.event.startswith("prefect.asset.")]
        return sorted(({"event": e.event, "resource": dict(e.resource.root),
                        "related": sorted((dict(r.root) for r in e.related
                                           if r.role in ("asset", "asset-materialized-by")),
                                          key=json.dumps),
                        "payload": e.payload} for e in events), key=json.dumps)
    finally:
        EventsWorker.set_client_override(None)


def main() -> None:
    result_path, bad_outbox = sys.argv[1], sys.argv[2]
    from assetlog.integrations.prefect.bridge import installed

    out: dict[str, Any] = {"bridge_installed": installed()}
    with tempfile.TemporaryDirectory() as folder:
        flows = prefect_examples(Path(folder))
        out["flows"] = [example(return_state=True).type.value for example in flows]
        out["flow_names"] = [example.name for example in flows]
    out["failing"] = run_failing_flow()
    out["prefect_events_on"] = prefect_asset_events(bridge_on=True)
    good_outbox = os.environ["ASSETLOG_OUTBOX_DIR"]
    out["broken_outbox"] = run_with_broken_outbox(bad_outbox)
    run_flow_delivered_at_exit(good_outbox)
    out["prefect_events_off"] = prefect_asset_events(bridge_on=False)
    Path(result_path).write_text(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
