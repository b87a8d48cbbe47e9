"""Deprecated path: the producer's event builders moved to `assetlog.producer.event_builders`.

The old name read like `assetlog.projections.events` (the consumers' validated
events); this path warns and goes in the next release. It is the very same
module, so every name and every monkeypatch reach the one real module.
"""

from assetlog.projections._moved import moved

moved(__name__, "assetlog.producer.event_builders")
