"""The producer's event builders moved: `assetlog.producer.events` -> `assetlog.producer.event_builders`.

The old name read like `assetlog.projections.events` (the consumers' validated events).
docs/prefect.md named the old path, so it keeps working for one release, with a
DeprecationWarning, and is the very same module (a monkeypatch through either path
reaches the one real module).
"""

from __future__ import annotations

from moved_support import assert_old_path_warns_and_is_the_new_module, run_fresh_python


def test_the_old_event_builders_path_warns_and_is_the_new_module() -> None:
    assert_old_path_warns_and_is_the_new_module(
        "assetlog.producer.events", "assetlog.producer.event_builders", ["DERIVED_ID_NAMESPACE", "derived_event_id"])


def test_the_producer_itself_does_not_use_the_old_path() -> None:
    run_fresh_python("import sys, assetlog.producer, assetlog.integrations.prefect.mapping\n"
                     "assert 'assetlog.producer.events' not in sys.modules\n")
