"""`assetlog demo`: the main job, end to end.

Start the local stack unless servers are configured, create the topics and
tables, run the example pipelines (producer -> Kafka), run both consumers
until caught up (Kafka -> PostgreSQL), and print what was built, read back
through the read-only query API. Every stage is the real one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from assetlog.cli_support import add_json_flag, print_result, whole_number
from assetlog.compose.stack import LocalStack
from assetlog.config import ENV_KAFKA_BOOTSTRAP, ENV_POSTGRES_DSN, Settings
from assetlog.consumers import run_until_caught_up
from assetlog.errors import AssetlogError
from assetlog.examples import run_all
from assetlog.producer import Publisher, publishing
from assetlog.projections import migrate
from assetlog.query.store import LineageStore
from assetlog.topics import MAX_PARTITIONS, ensure_topics


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="start the stack if needed, run the example flows, project them, print what was built")
    demo.add_argument("--partitions", type=whole_number(1, MAX_PARTITIONS), default=3,
                      help="partitions of the event topics it creates")
    add_json_flag(demo)
    demo.set_defaults(handler=run_demo)


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace) -> tuple[Settings, dict[str, Any]]:
    """Settings for the configured servers, or for the local stack after starting it."""
    if os.environ.get(ENV_KAFKA_BOOTSTRAP) and os.environ.get(ENV_POSTGRES_DSN):
        _say(args, "using the configured Kafka and PostgreSQL")
        return Settings.from_env(), {"configured": True}

    _say(args, "starting the local stack (Kafka + PostgreSQL)...")
    stack = LocalStack.default()
    started = stack.up()
    env = {**os.environ, **stack.env()}
    return Settings.from_env(env), {"configured": False, "stack": started}


def run_demo(args: argparse.Namespace) -> int:
    began = time.monotonic()
    settings, stack = _settings(args)
    ensure_topics(settings, partitions=args.partitions)
    migrated = migrate(settings.require_postgres())

    _say(args, f"running the example flows (topics {settings.topic_prefix}.*)...")
    publisher = Publisher(settings)
    try:
        with publishing(publisher):
            flows = run_all()
    finally:
        delivery = publisher.close()
    if not delivery.complete:
        raise AssetlogError(f"{delivery.waiting} events could not be delivered yet; they wait in the outbox "
                            f"({settings.outbox_dir}); run `assetlog outbox flush` once Kafka is reachable")

    _say(args, "projecting into PostgreSQL (both consumers, until caught up)...")
    consumed = {name: run_until_caught_up(name, settings).as_dict() for name in ("properties", "lineage")}

    with LineageStore(settings.require_postgres()) as store:
        assets = [store.asset(summary.key) for summary in store.search(None, limit=1000).assets]
        edges = sorted({(edge.upstream, edge.downstream, edge.declared)
                        for asset in assets
                        for edge in store.lineage(asset.key, direction="upstream", depth=1).edges})
    result = {
        "stack": stack,
        "migrations": migrated.as_dict(),
        "flows": flows,
        "consumers": consumed,
        "assets": [asset.model_dump(mode="json") for asset in assets],
        "edges": [{"upstream": u, "downstream": d, "declared": how} for u, d, how in edges],
        "seconds": round(time.monotonic() - began, 2),
    }
    print_result(args, result, lambda: _render(result, assets, edges))
    return 0


def _render(result: dict[str, Any], assets: list[Any], edges: list[tuple[str, str, str]]) -> str:
    lines = [f"ran {len(result['flows'])} example flows: {', '.join(result['flows'])}", ""]
    lines.append(f"ASSETS ({len(assets)})")
    for asset in assets:
        props = asset.properties
        status = asset.last_materialization.status if asset.last_materialization else "referenced only"
        lines.append(f"  {asset.key}")
        if props is not None:
            owners = ", ".join(props.owners or []) or "-"
            lines.append(f"      name: {props.name or '-'}   owners: {owners}   url: {props.url or '-'}")
            if props.description:
                lines.append(f"      description: {props.description[:100]}")
        lines.append(f"      last materialization: {status}")
        if asset.metadata is not None and asset.metadata.metadata:
            lines.append(f"      metadata: {asset.metadata.metadata}")
    lines.append("")
    lines.append(f"LINEAGE EDGES ({len(edges)})")
    for upstream, downstream, declared in edges:
        lines.append(f"  {upstream}  ->  {downstream}   ({declared})")
    consumed = result["consumers"]
    lines.append("")
    lines.append("consumers: " + "; ".join(
        f"{name} projected {stats['messages']} messages" for name, stats in consumed.items()))
    lines.append(f"done in {result['seconds']}s. Explore: assetlog assets | assetlog show KEY | "
                 "assetlog lineage KEY --format mermaid | assetlog serve")
    return "\n".join(lines)
