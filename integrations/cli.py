"""`assetlog ingest ...` and `assetlog export ...`: one group each, one subcommand per integration.

Each integration module named in `INTEGRATION_CLIS` provides
`register(ingest, export)`, adding its subcommands to the two groups, so the
top-level CLI only knows this module.
"""

from __future__ import annotations

import argparse
import importlib

# Modules that add subcommands under `ingest` and `export`, imported when the parser is built.
INTEGRATION_CLIS: tuple[str, ...] = ("assetlog.integrations.prefect.cli", "assetlog.integrations.openlineage.cli")


def register(subparsers: argparse._SubParsersAction) -> None:
    if not INTEGRATION_CLIS:
        return
    ingest = subparsers.add_parser("ingest", help="follow another lineage system and publish its events")
    export = subparsers.add_parser("export", help="send Assetlog's events on to another lineage system")
    ingest_actions = ingest.add_subparsers(dest="ingest_source", metavar="SOURCE", required=True)
    export_actions = export.add_subparsers(dest="export_format", metavar="FORMAT", required=True)
    for name in INTEGRATION_CLIS:
        importlib.import_module(name).register(ingest_actions, export_actions)
