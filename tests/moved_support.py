"""Checks for a module that moved and keeps its old path for one release (see projections/_moved.py)."""

from __future__ import annotations

import subprocess
import sys


def run_fresh_python(code: str) -> None:
    """Run `code` in a new interpreter (a clean `sys.modules`, so import-time warnings fire); it must succeed."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def assert_old_path_warns_and_is_the_new_module(old: str, new: str, names: list[str], also: str = "") -> None:
    """Importing `names` from `old` warns naming `new`, and `old` is the very module `new` (plus `also`)."""
    run_fresh_python(
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    from {old} import {', '.join(names)}\n"
        f"import {old} as old, {new} as new\n"
        "assert old is new, (old, new)\n"
        + "".join(f"assert {name} is new.{name}\n" for name in names)
        + also
        + "messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]\n"
        f"assert any({new!r} in m for m in messages), messages\n"
    )
