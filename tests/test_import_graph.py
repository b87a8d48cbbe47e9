"""No import cycle between or inside Assetlog's packages (issue 12).

Every module of every installed package (the folders `pyproject.toml` maps under
`assetlog`) is parsed with `ast`; its module-level imports (what runs at import
time: not inside functions, not under `if TYPE_CHECKING:`) become edges between
`assetlog.*` modules, and the graph must have no cycle. `from pkg import name`
counts as an import of `pkg.name` when that is a module, else of `pkg`.
"""

from __future__ import annotations

import ast
import contextlib
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent

def modules() -> dict[str, Path]:
    """Every module of the installed packages, by its dotted name."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found: dict[str, Path] = {}
    for package, folder in config["package-dir"].items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if any(not (ROOT / folder / Path(*parts[:i]) / "__init__.py").exists() for i in range(1, len(parts))):
                continue  # a folder that is not a package (e.g. scripts beside the code)
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_nodes(nodes: list[ast.stmt], deferred: bool = False) -> Iterator[ast.stmt]:
    """Statements that run when the module is imported (with `deferred`, those in functions too);
    never those only for type checkers."""
    for node in nodes:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not deferred:
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_time_nodes(node.orelse, deferred)
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, field, None)
            if isinstance(inner, list):
                yield from _import_time_nodes([n for n in inner if isinstance(n, ast.stmt)]
                                              + [s for h in inner if isinstance(h, ast.ExceptHandler) for s in h.body],
                                              deferred)


def imports_of(name: str, path: Path, known: dict[str, Path], deferred: bool = False) -> set[str]:
    """The `assetlog.*` modules that module `name` imports at import time (with `deferred`, or later)."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in _import_time_nodes(ast.parse(path.read_text(), str(path)).body, deferred):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                targets.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source)
    resolved = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def extension_modules() -> dict[str, Path]:
    """The C extensions (`<folder>/<name>.c`, built by setup.py), by dotted name: leaves of the graph,
    since they import no Assetlog module; known so that importing one is not read as importing its package."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {f"{package}.{path.stem}": path for package, folder in config["package-dir"].items()
            for path in sorted((ROOT / folder).glob("*.c"))}


@cache
def import_graph(deferred: bool = False) -> dict[str, set[str]]:
    """Module -> the modules it imports (cached: read-only for the tests)."""
    known = modules()
    importable = {**known, **extension_modules()}
    return {name: imports_of(name, path, importable, deferred) for name, path in known.items()}


def test_the_graph_covers_every_package() -> None:
    graph = import_graph()
    assert {"assetlog.cli", "assetlog.cli_support", "assetlog.query.store", "assetlog.projections.migrate",
            "assetlog.producer", "assetlog.consumers.runner", "assetlog.schemas.codec",
            "assetlog.integrations.prefect.plugin"} <= graph.keys()
    assert "assetlog.query.catalog" in graph["assetlog.query.store"]
    assert "assetlog.cli_support" in graph["assetlog.query.cli"]
    assert graph["assetlog.schemas.compiled"] == {"assetlog.schemas._avro_reader", "assetlog.schemas.specialised"}


def test_find_cycle_reports_the_loop() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_cycle_hidden_by_function_level_imports() -> None:
    """A function-level import may defer a heavy optional dependency, not hide a loop."""
    cycle = find_cycle(import_graph(deferred=True))
    assert cycle is None, "import cycle through a function-level import: " + " -> ".join(cycle or [])


def test_the_producer_defers_no_import_of_its_own_modules() -> None:
    """The run context (`producer/context.py`) keeps the producer's graph a tree: none of its modules
    imports another producer module inside a function."""
    at_import, anytime = import_graph(), import_graph(deferred=True)
    deferred = {(source, target) for source, targets in anytime.items() if source.startswith("assetlog.producer")
                for target in targets - at_import[source] if target.startswith("assetlog.producer")}
    assert not deferred, f"function-level imports inside producer/: {sorted(deferred)}"


def test_cli_support_is_a_leaf() -> None:
    """Stage CLIs import their helpers from here, so it must import no stage (nor the top-level CLI)."""
    assert import_graph()["assetlog.cli_support"] <= {"assetlog.visible"}


# A required dependency that may still be deferred: a server only `assetlog serve` and the OpenLineage
# listener run, which costs about 100 ms (click, h11, its loop set-up) on every other command, `--help`
# included. `test_required_but_heavy_packages_stay_out_of_cli_start_up` checks it still defers something.
REQUIRED_BUT_HEAVY = frozenset({"uvicorn"})


def _closure(requirements: list[str]) -> set[str]:
    """The distributions `requirements` install, with everything they require (installed ones only)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen or name == "assetlog" or (
                requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        with contextlib.suppress(metadata.PackageNotFoundError):
            todo += [Requirement(r) for r in metadata.requires(name) or []]
    return seen


@cache
def deferrable() -> frozenset[str]:
    """Top-level import names a function-level import may defer: what only an optional extra of
    `pyproject.toml` installs (prefect, openlineage, jsonschema, cryptography, ... and what they bring),
    and `REQUIRED_BUT_HEAVY`."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    optional = _closure(extras) - _closure(project["dependencies"])
    return REQUIRED_BUT_HEAVY | {module for module, distributions in metadata.packages_distributions().items()
                                 if any(canonicalize_name(d) in optional for d in distributions)}


def unexplained_deferrals(name: str, path: Path, allowed: frozenset[str] | None = None) -> list[str]:
    """Function-level imports that defer nothing worth deferring. Each needs a `# deferred: <why>` comment
    (on its own line(s) or opening the comment lines above its run of import statements); a third-party import must be
    of an `allowed` package (default: `deferrable()`), and the comment starts with the `allowed` package
    it keeps out (`# deferred: prefect, ...`); for an import of an Assetlog module, the package that module
    would bring in, or that imports it (deferring a few ms of our own modules is not reason enough: issue 12).

    The standard library is not excepted: a function-level `import json` saves nothing measurable (most
    of it is loaded at start-up anyway), so it has no reason to be there and no comment could give one."""
    allowed = deferrable() if allowed is None else allowed
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text, str(path))
    everywhere = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    import_lines = {line for n in everywhere for line in range(n.lineno, (n.end_lineno or n.lineno) + 1)}
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Import):
                targets = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = ["assetlog"] if node.level else [(node.module or "").split(".")[0]]
            else:
                continue
            where = f"{name}:{node.lineno}: {lines[node.lineno - 1].strip()}"
            if any(t != "assetlog" and t not in allowed for t in targets):
                found.append(f"{where} (not an optional package: import it at module level)")
                continue
            own = lines[node.lineno - 1:node.end_lineno]
            above = node.lineno - 1
            while above in import_lines:
                above -= 1
            comments = [line.partition("# deferred:")[2] for line in own if "# deferred:" in line]
            block = []  # the comment lines right above the run of imports
            while above >= 1 and lines[above - 1].strip().startswith("#"):
                block.insert(0, lines[above - 1].strip())
                above -= 1
            if block and block[0].startswith("# deferred:"):
                comments.append(" ".join(block).partition("# deferred:")[2])
            if not comments:
                found.append(f"{where} (no `# deferred: <why>` comment)")
            elif not any((first := re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", c)) and first[1] in allowed
                         for c in comments):
                found.append(f"{where} (its comment does not start with the optional package it keeps out)")
    return found


def test_every_function_level_import_says_what_it_defers() -> None:
    """Function-level imports only defer a heavy optional dependency (issue 12), and each says which:
    `# deferred: ...` on its line or on the line above its imports. Everything else, third-party
    packages the CLI loads anyway (confluent_kafka, psycopg, ...) and the standard library included,
    is imported at module level."""
    missing = [entry for name, path in sorted(modules().items()) for entry in unexplained_deferrals(name, path)]
    assert not missing, "function-level imports that defer nothing heavy:\n" + "\n".join(missing)


def test_deferrable_packages_are_the_optional_extras() -> None:
    allowed = deferrable()
    assert {"prefect", "openlineage", "jsonschema", "jsonschema_rs", "referencing", "cryptography",
            "uvicorn"} <= allowed
    assert not {"confluent_kafka", "psycopg", "psycopg_pool", "fastavro", "pydantic", "starlette", "orjson",
                "prometheus_client", "jinja2", "json", "assetlog"} & allowed


def test_required_but_heavy_packages_stay_out_of_cli_start_up() -> None:
    """A required package is deferred only while `assetlog`'s start-up does not load it anyway."""
    loaded = subprocess.run([sys.executable, "-c", "import sys, assetlog.cli; print(*sys.modules)"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert not REQUIRED_BUT_HEAVY & {module.split(".")[0] for module in loaded}


def test_the_deferral_check_sees_a_bare_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from assetlog.config import Settings\n    import os\n\n"
                      "def g():\n    # deferred: prefect, only g needs it\n    import prefect\n"
                      "    import uvicorn  # deferred: uvicorn\n\ndef h():\n    import prefect\n"
                      "    import psycopg  # deferred: psycopg\n\ndef i():\n"
                      "    from assetlog import replay  # deferred: replay (~20 ms of modules)\n"
                      "    from assetlog import bridge  # deferred: prefect, the bridge imports it\n")
    assert unexplained_deferrals("m", module, frozenset({"prefect", "uvicorn"})) == [
        "m:2: from assetlog.config import Settings (no `# deferred: <why>` comment)",
        "m:3: import os (not an optional package: import it at module level)",
        "m:11: import prefect (no `# deferred: <why>` comment)",
        "m:12: import psycopg  # deferred: psycopg (not an optional package: import it at module level)",
        "m:15: from assetlog import replay  # deferred: replay (~20 ms of modules) (its comment does not start "
        "with the optional package it keeps out)"]
