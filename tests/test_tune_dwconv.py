"""bench/tune_dwconv.py without a GPU: its sweep plan, its shapes, its report's arithmetic, its case count."""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tune():
    """bench/tune_dwconv.py imported as the GPU session runs it (bench/ first on sys.path, its helpers as
    ``_harness``), then taken off sys.path and sys.modules again."""
    names = ("_harness", "bench_dwconv_bn_act", "tune_dwconv")
    saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
    path_before = list(sys.path)
    sys.path.insert(0, str(REPO / "bench"))
    try:
        module = importlib.import_module("tune_dwconv")
        module.SHAPES_SEEN = module.shapes()  # imports bench_dwconv_bn_act while bench/ is on the path
    finally:
        sys.path[:] = path_before
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(saved)
    return module


def test_plan_alternates_layouts_and_starts_with_the_current_configs(tune):
    from imgcls.kernels import dwconv_bn_act

    plan = tune.plan()
    assert len(plan) == sum(len(c) for c in tune.CANDIDATES.values())
    assert [layout for layout, _ in plan[:4]] == ["nchw", "channels_last"] * 2
    for layout, candidates in tune.CANDIDATES.items():
        assert candidates[0] == dwconv_bn_act._GPU_CONFIGS[3][layout]
        assert len(set(candidates)) == len(candidates)


def test_shapes_are_the_benches_stride1_3x3_shapes(tune):
    assert len(tune.SHAPES_SEEN) == len(tune.TUNED) == 5
    assert all(k == 3 and stride == 1 for _, _, _, k, stride, _ in tune.SHAPES_SEEN)


def test_report_speed_is_the_geometric_mean_against_the_first_row(tune):
    found = {
        "nchw": [
            {"config": (8, 64, 4), "ms": {"a": 1.0, "b": 2.0}},
            {"config": (4, 64, 4), "ms": {"a": 0.5, "b": 4.0}},  # 2x and 0.5x: geometric mean 1.00x
            {"config": (4, 64, 2), "ms": {"a": 0.25, "b": 1.0}},  # 4x and 2x: 2.83x
            {"config": (8, 32, 4), "error": "AssertionError: output: max error 1 > 0.03 * 1"},
        ],
        "channels_last": [],
    }
    text = tune.report(found, "Test GPU")
    assert "Test GPU" in text and "## channels_last" not in text
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| (")}
    assert rows["| (8, 64, 4)"].endswith("| 1.00x |")
    assert rows["| (4, 64, 4)"].endswith("| 1.00x |")
    assert rows["| (4, 64, 2)"].endswith(f"| {math.sqrt(8):.2f}x |")
    assert "max error" in rows["| (8, 32, 4)"]


def test_collect_only_counts_every_case_and_needs_no_gpu():
    out = subprocess.run(
        [sys.executable, "bench/tune_dwconv.py", "--co"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "60 tests collected"
