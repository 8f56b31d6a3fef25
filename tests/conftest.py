"""Shared test helpers: where the shared ground truth lives, fresh seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Ground truth from the original Paddle programs; beside the checkout (../shared) or inside it (shared/).
SHARED = Path(os.environ.get("IMGCLS_SHARED", REPO.parent / "shared"))
if not SHARED.exists() and (REPO / "shared").exists():
    SHARED = REPO / "shared"
PARITY = SHARED / "paddle_parity"


@pytest.fixture
def parity_dir() -> Path:
    if not PARITY.exists():
        pytest.skip(f"Paddle parity fixtures not found at {PARITY} (set IMGCLS_SHARED)")
    return PARITY


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (the biggest models, interpreter-heavy checks) run only when ``-m`` asks for them."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
