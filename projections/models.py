"""Deprecated path: moved to `assetlog.query.models` (this one warns, and goes in the next release)."""

from assetlog.projections._moved import moved

moved(__name__, "assetlog.query.models")
