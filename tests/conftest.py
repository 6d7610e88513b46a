import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "official"

# keep the suite reproducible and light on the 2-core CI machine
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("THKIT_TESTING", "1")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"official fixtures not found at {FIXTURES} (../shared beside the repository)")
    return FIXTURES


def run_cli(*args, env=None, cwd=None):
    """Run the installed ``thkit`` CLI in a subprocess; returns CompletedProcess (text)."""
    import subprocess

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "thkit.cli", *args], capture_output=True, text=True, env=e,
                          cwd=cwd or ROOT, timeout=600)
