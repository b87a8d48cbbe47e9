"""The Prefect bridge on the oldest Prefect minor the extra allows (3.8), beside the newest the suite runs.

The default suite runs the bridge against the newest pinned Prefect (what
`pip install '.[test]'` resolves). This slow test builds a second virtualenv
(kept in the user's cache, so only the first run downloads) with Prefect 3.8
and runs the bridge's test files in it against the same broker and database.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from assetlog.config import cache_home

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
ROOT = Path(__file__).resolve().parents[1]
OLDEST = "prefect==3.8.8"


def _venv() -> Path:
    """The kept virtualenv, installed again when the pin or the project's requirements changed (a venv
    kept from before pytest-xdist joined the test extras refused the suite's `--numprocesses`)."""
    venv = cache_home() / "prefect-3.8-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = f"{OLDEST} {hashlib.sha256((ROOT / 'pyproject.toml').read_bytes()).hexdigest()}"
    if not stamp.exists() or stamp.read_text() != wanted:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[test]", OLDEST,
                        "fastapi<0.151"], check=True)
        stamp.write_text(wanted)
    return python


def test_bridge_tests_pass_on_the_oldest_pinned_prefect_minor() -> None:
    python = _venv()
    version = subprocess.run([str(python), "-c", "import prefect; print(prefect.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version.startswith("3.8."), version
    done = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_prefect_bridge.py",
         "tests/test_prefect_mapping.py", "tests/test_producer_derived_ids.py"],
        cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=1700, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
