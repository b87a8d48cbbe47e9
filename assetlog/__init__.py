"""Assetlog: lineage for data workflows.

The root package holds only what every stage shares (configuration, the CLI);
the stages live in `assetlog.producer`, `assetlog.consumers`,
`assetlog.projections`, `assetlog.schemas` and `assetlog.compose`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("assetlog")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
