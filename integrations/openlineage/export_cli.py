"""`assetlog export openlineage`: not there yet (see the integration's docs)."""

from __future__ import annotations

import argparse


def register(export: argparse._SubParsersAction) -> None:
    return None
