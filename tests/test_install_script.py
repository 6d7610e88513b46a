"""scripts/install-mediapipe against a stand-in Python whose pip prints what real pip prints (no network): its
post-install conflict report about mediapipe's skipped requirements becomes one plain note; a failing pip stops
the script with pip's output."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import ROOT

SCRIPT = ROOT / "scripts" / "install-mediapipe"

REPORT = """ERROR: pip's dependency resolver does not currently take into account all the packages that are installed. \
This behaviour is the source of the following dependency conflicts.
mediapipe 0.10.21 requires jax, which is not installed.
mediapipe 0.10.21 requires numpy<2, but you have numpy 2.4.6 which is incompatible.
"""

FAKE_PYTHON = """#!/usr/bin/env bash
# stand-in for VENV/bin/python: `-m pip install ...` logs its arguments and answers as $FAKE_PIP says
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
    echo "${@:3}" >> "$FAKE_LOG"
    case "$FAKE_PIP" in
        report) [ "$5" = "--no-deps" ] || cat "$FAKE_REPORT" >&2 ;;
        other) echo "WARNING: something else pip wants you to know" >&2 ;;
        fail) echo "ERROR: Could not find a version that satisfies the requirement mediapipe==0.10.21" >&2; exit 1 ;;
    esac
    exit 0
fi
case "$2" in
    *numpy.__version__*) echo 2.4.6 ;;
    *mediapipe.__version__*) echo 0.10.21 ;;
esac
exit 0
"""


def _run(tmp_path, mode):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(FAKE_PYTHON)
    py.chmod(0o755)
    (tmp_path / "report.txt").write_text(REPORT)
    env = dict(os.environ, FAKE_PIP=mode, FAKE_LOG=str(tmp_path / "pip.log"), FAKE_REPORT=str(tmp_path / "report.txt"))
    res = subprocess.run(["bash", str(SCRIPT), str(venv)], capture_output=True, text=True, env=env, timeout=60)
    log = (tmp_path / "pip.log").read_text().splitlines() if (tmp_path / "pip.log").exists() else []
    return res, log


def test_conflict_report_becomes_one_plain_note(tmp_path):
    res, log = _run(tmp_path, "report")
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert "ERROR" not in out and "requires numpy<2" not in out
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "numpy 2.4.6" in notes[0] and "on purpose" in notes[0]
    assert out.splitlines()[-1] == f"mediapipe 0.10.21 installed in {tmp_path / 'venv'}"
    # mediapipe comes last and without its declared dependencies
    assert log[-1] == "install -q --no-deps mediapipe==0.10.21" and "protobuf>=4.25.3,<5" in log[0]


def test_other_pip_output_is_shown_and_no_note_without_a_report(tmp_path):
    res, _ = _run(tmp_path, "other")
    assert res.returncode == 0, res.stderr
    assert "something else pip wants you to know" in res.stderr
    assert "note:" not in res.stdout + res.stderr


def test_a_failing_pip_stops_the_script_with_its_output(tmp_path):
    res, log = _run(tmp_path, "fail")
    assert res.returncode != 0
    assert "Could not find a version" in res.stderr and "pip install" in res.stderr and "failed" in res.stderr
    assert len(log) == 1 and "installed in" not in res.stdout
