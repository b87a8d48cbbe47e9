"""The read side moved from `assetlog.projections` to `assetlog.query` (issue 12).

The old public paths keep working for one release, each with a DeprecationWarning,
and `assetlog.projections` itself never imports `assetlog.query`.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

import assetlog.query
from assetlog.query import cli as query_cli
from assetlog.query import store

OLD_MODULES = {
    "assetlog.projections.store": "assetlog.query.store",
    "assetlog.projections.catalog": "assetlog.query.catalog",
    "assetlog.projections.graph": "assetlog.query.graph",
    "assetlog.projections.models": "assetlog.query.models",
    "assetlog.projections.render": "assetlog.query.render",
    "assetlog.projections.timeparse": "assetlog.query.timeparse",
    "assetlog.projections.query_cli": "assetlog.query.cli",
}


@pytest.mark.parametrize(("old", "new"), sorted(OLD_MODULES.items()))
def test_old_module_path_warns_and_is_the_new_module(old: str, new: str) -> None:
    sys.modules.pop(old, None)  # a fresh import, so its warning comes again
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_documented_old_class_path_still_gives_the_same_class() -> None:
    sys.modules.pop("assetlog.projections.store", None)
    with pytest.warns(DeprecationWarning):
        from assetlog.projections.store import LineageStore
    assert LineageStore is store.LineageStore is assetlog.query.LineageStore
    assert query_cli.register  # the CLI module is reachable under its new name


@pytest.mark.parametrize("name", ["LineageStore", "AssetNotFound", "QueryTimeout", "readonly_dsn", "parse_time",
                                  "AssetDetails", "LineageGraph", "HistoryPage"])
def test_old_package_names_warn_and_forward(name: str) -> None:
    import assetlog.projections as projections

    with pytest.warns(DeprecationWarning, match=f"assetlog.query.{name}"):
        value = getattr(projections, name)
    assert value is getattr(assetlog.query, name)


def test_write_side_names_do_not_warn() -> None:
    import assetlog.projections as projections

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert projections.migrate and projections.PROJECTIONS and projections.to_event
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        projections.nothing_here  # noqa: B018


def test_projections_does_not_import_query() -> None:
    code = (
        "import sys, assetlog.projections, assetlog.projections.migrate\n"
        "leaked = sorted(m for m in sys.modules if m == 'assetlog.query' or m.startswith('assetlog.query.'))\n"
        "print(leaked)\n"
        "sys.exit(1 if leaked else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"importing assetlog.projections imported {done.stdout.strip()} {done.stderr}"
