"""bench/gpu_session.sh, the one prepared GPU call, in its dry run: every stage collects exactly the cases the
script says it selects, the files it promises land in $OUT, and it fits the device call it is written for."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

SCRIPT = REPO / "bench" / "gpu_session.sh"
DEVICE_CALL_S = 600  # the device tool's longest command (timeout_s)
MAX_FILES_BACK = 8  # files the device tool brings back from $OUT


def stages() -> list[tuple[str, int, str]]:
    """(name, cap in seconds, expected case count) of every ``stage`` call in the script, in order."""
    calls = re.findall(r"^[^#\n]*?\bstage (\w+) (\d+) (\S+) ", SCRIPT.read_text(), flags=re.M)
    return [(name, int(cap), expect) for name, cap, expect in calls]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu_session")
    env = {**os.environ, "GPU_SESSION_DRY": "1", "PYTHON": sys.executable, "OUT": str(out)}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    return proc, out


def test_every_stage_selects_the_cases_it_names(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    names = [name for name, _, _ in stages()]
    assert len(names) >= 10 and len(set(names)) == len(names)
    for name, _, expect in stages():
        line = re.search(rf"^stage {name}: dry run, selects (\d+) cases \(expected (\S+)\)$", proc.stdout, re.M)
        assert line, f"stage {name} did not report its dry run:\n{proc.stdout[-3000:]}"
        assert int(line[1]) > 0 and (expect == "+" or line[1] == expect), line[0]
    assert "MISMATCH" not in proc.stdout


def test_dry_run_writes_what_comes_back(dry_run):
    _, out = dry_run
    files = sorted(p.name for p in out.iterdir())
    assert "log.txt" in files and "env.json" in files and any(f.startswith("kernels_") for f in files), files
    assert len(files) <= MAX_FILES_BACK
    promised = {"log.txt", "env.json", "dwconv.json", "shuffle_se.json", "throughput.jsonl", "reader.json"}
    promised |= {"extras.json", "kernels_<gpu>.md"}
    assert len(promised) <= MAX_FILES_BACK and all(name in SCRIPT.read_text() for name in promised)
    assert "## Goals" in next(out.glob("kernels_*.md")).read_text()


def test_goal_stages_come_first_and_the_caps_fit_one_call():
    order = [name for name, _, _ in stages()]
    assert order[:4] == ["dwconv", "shuffle_se", "step", "step_compile"]
    assert {"throughput_mobilenet", "throughput_se_resnext", "reader"} <= set(order[4:7])
    budget = int(re.search(r"BUDGET=\$\{GPU_SESSION_BUDGET_S:-(\d+)\}", SCRIPT.read_text())[1])
    assert budget <= DEVICE_CALL_S - 60  # start-up, the env probe and the last table fit in the rest
    fixed = [cap for name, cap, _ in stages() if name != "extras"]
    assert all(0 < cap < budget for cap in fixed)


def test_script_names_no_issue_numbers():
    assert not re.search(r"\b[Ii]ssue\s*#?\d", SCRIPT.read_text())
