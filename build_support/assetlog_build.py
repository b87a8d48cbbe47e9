"""Assetlog's build backend: setuptools' own, with one notice of its editable installs left out.

`pip install -e .` maps each folder to `assetlog.<folder>` (pyproject's package-dir). setuptools
does that only with its import-hook ("lenient") editable strategy, which always ends with an
`InformationOnly` notice ("Editable installation. Please be careful with folders in your working
directory with the same name as your package"), and pip shows it as a warning. setuptools has no
setting that turns it off: the "strict" strategy ends with a notice of its own (and needs a
reinstall for each new module); "compat" is deprecated (a warning) and cannot map package-dir.
So `build_editable` ignores that category alone, by class and not by text: setuptools' warnings and
deprecations still show, and every other hook (wheels, sdists) is setuptools' unchanged.
"""

from __future__ import annotations

import warnings
from typing import Any

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403  (the other hooks, unchanged)
from setuptools.warnings import InformationOnly


def build_editable(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                   metadata_directory: str | None = None) -> str:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=InformationOnly)
        return build_meta.build_editable(wheel_directory, config_settings, metadata_directory)
