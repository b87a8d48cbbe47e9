"""The producer's event builders moved: `assetlog.producer.events` -> `assetlog.producer.event_builders`.

The old name read like `assetlog.projections.events` (the consumers' validated events).
docs/prefect.md named the old path, so it keeps working for one release, with a
DeprecationWarning, and is the very same module (a monkeypatch through either path
reaches the one real module).
"""

from __future__ import annotations

import subprocess
import sys


def test_the_old_event_builders_path_warns_and_is_the_new_module() -> None:
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from assetlog.producer.events import DERIVED_ID_NAMESPACE, derived_event_id\n"
        "import assetlog.producer.events as old, assetlog.producer.event_builders as new\n"
        "assert old is new and derived_event_id is new.derived_event_id, (old, new)\n"
        "assert DERIVED_ID_NAMESPACE is new.DERIVED_ID_NAMESPACE\n"
        "messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]\n"
        "assert any('assetlog.producer.event_builders' in m for m in messages), messages\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_the_producer_itself_does_not_use_the_old_path() -> None:
    code = ("import sys, assetlog.producer, assetlog.integrations.prefect.mapping\n"
            "assert 'assetlog.producer.events' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
