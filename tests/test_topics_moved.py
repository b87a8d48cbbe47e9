"""The topic policy moved out of the process supervisor: `assetlog.compose.topics` -> `assetlog.topics`.

The old path keeps working for one release, with a DeprecationWarning, and is the
very same module (so a monkeypatch through either path reaches the one real module).
"""

from __future__ import annotations

import subprocess
import sys


def test_the_old_topics_path_warns_and_is_the_new_module() -> None:
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from assetlog.compose.topics import ensure_topics, REQUIRED_TOPIC_CONFIG\n"
        "import assetlog.compose.topics as old, assetlog.topics as new\n"
        "assert old is new and ensure_topics is new.ensure_topics, (old, new)\n"
        "assert REQUIRED_TOPIC_CONFIG['retention.ms'] == '-1'\n"
        "messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]\n"
        "assert any('assetlog.topics' in m for m in messages), messages\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_the_supervisor_does_not_load_the_topic_policy_at_import() -> None:
    code = "import sys, assetlog.compose\nassert 'assetlog.topics' not in sys.modules\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
