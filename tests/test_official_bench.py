"""benchmarks/official.py takes the official code from checkouts the user names; a wrong name or folder is one line
that says what was expected (the official code itself is not in this repository, so its timings are not tested)."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.parametrize("args,message", [
    ([], "give at least one --repo METHOD=DIR"),
    (["--repo", "mcnet=/tmp"], "expected METHOD=DIR with METHOD one of fomm, tpsmm, smac"),
    (["--repo", "smac=/nonexistent"], "options/test.yml does not exist (expected a checkout of the official smac"),
])
def test_bad_repo_is_one_line(args, message):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "official.py"), *args], capture_output=True,
                          text=True, cwd=ROOT / "benchmarks")
    assert done.returncode == 2
    assert message in done.stderr.strip().splitlines()[-1]
