"""Old import paths of the read side, kept for one release (it moved to `assetlog.query`).

Each shim module replaces itself in `sys.modules` by the module it moved to, so
every name (private ones too) and every monkeypatch reach the one real module;
the DeprecationWarning comes once, when the old path is first imported.
"""

from __future__ import annotations

import importlib
import sys
import warnings


def moved(old: str, new: str) -> None:
    """Make module `old` an alias of module `new`, with a DeprecationWarning naming the new path."""
    warnings.warn(f"{old} moved to {new}; the old path goes in the next release", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
