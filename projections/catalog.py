"""Deprecated path: moved to `assetlog.query.catalog` (this one warns, and goes in the next release)."""

from assetlog.projections._moved import moved

moved(__name__, "assetlog.query.catalog")
