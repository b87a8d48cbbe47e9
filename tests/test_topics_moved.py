"""The topic policy moved out of the process supervisor: `assetlog.compose.topics` -> `assetlog.topics`.

The old path keeps working for one release, with a DeprecationWarning, and is the
very same module (so a monkeypatch through either path reaches the one real module).
"""

from __future__ import annotations

from moved_support import assert_old_path_warns_and_is_the_new_module, run_fresh_python


def test_the_old_topics_path_warns_and_is_the_new_module() -> None:
    assert_old_path_warns_and_is_the_new_module(
        "assetlog.compose.topics", "assetlog.topics", ["ensure_topics", "REQUIRED_TOPIC_CONFIG"],
        also="assert REQUIRED_TOPIC_CONFIG['retention.ms'] == '-1'\n")


def test_the_supervisor_does_not_load_the_topic_policy_at_import() -> None:
    run_fresh_python("import sys, assetlog.compose\nassert 'assetlog.topics' not in sys.modules\n")
