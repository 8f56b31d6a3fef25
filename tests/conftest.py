"""Shared test helpers: where the shared ground truth lives (and what its absence means), fresh seeds."""

from __future__ import annotations

import importlib.util
import os
import secrets
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
# Ground truth from the original Paddle programs; beside the checkout (../shared) or inside it (shared/).
SHARED = Path(os.environ.get("IMGCLS_SHARED", REPO.parent / "shared"))
if not SHARED.exists() and (REPO / "shared").exists():
    SHARED = REPO / "shared"
PARITY = SHARED / "paddle_parity"
TRAIN_PARITY = SHARED / "paddle_train_parity"


def on_ci() -> bool:
    """CI sets ``CI`` (``CI=true``); there the shared ground truth must be present."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def shared_missing(what: Path | str) -> None:
    """Missing shared ground truth: a failure on CI (a green run must have checked parity), a skip with the reason
    in a user's clone without ``../shared``. Never returns."""
    message = f"{what} not found (the shared Paddle ground truth: put it at ../shared or set IMGCLS_SHARED)"
    if on_ci():
        pytest.fail(f"{message}; CI must run this check", pytrace=False)
    pytest.skip(message)


def require_shared(path: Path) -> Path:
    """``path`` if it exists, else ``shared_missing(path)``."""
    if not path.exists():
        shared_missing(path)
    return path


def require_native() -> None:
    """The C++ reader (``imgcls._reader``) must be importable: a failure on CI, whose setup builds it, and a skip
    with the reason (not built, or built but not loadable) in a clone that has not built it."""
    from imgcls.data.readers import native_unavailable

    reason = native_unavailable()
    if reason is None:
        return
    if on_ci():
        pytest.fail(f"{reason}; CI must run this check", pytrace=False)
    pytest.skip(reason)


def require_triton() -> None:
    """Triton must be importable for a test that runs the kernels (requirements.txt pins it): a failure on CI, a
    skip with the reason elsewhere."""
    import importlib.util

    if importlib.util.find_spec("triton") is not None:
        return
    if on_ci():
        pytest.fail("Triton is not installed; CI must run this check", pytrace=False)
    pytest.skip("Triton is not installed")


@pytest.fixture(scope="session")
def needs_native() -> None:
    """``require_native`` as a fixture: ``pytestmark = pytest.mark.usefixtures("needs_native")``. Session-scoped, so
    that it runs before the session fixtures that use the module (pytest sets up wider scopes first)."""
    require_native()


def shared_module(folder: Path, name: str) -> ModuleType:
    """Import ``folder/name.py`` (the numpy-only rules that ship with the ground truth, e.g. ``paddle_weights``)."""
    spec = importlib.util.spec_from_file_location(f"shared_{name}", require_shared(folder / f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def parity_dir() -> Path:
    return require_shared(PARITY)


@pytest.fixture
def fresh_seed() -> int:
    """A new seed per run, printed so that a failing case can be replayed (pytest shows it with the failure)."""
    seed = secrets.randbits(32)
    print(f"seed={seed}")
    return seed


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (the biggest models, interpreter-heavy checks) run only when ``-m`` asks for them."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def weights_server(tmp_path, monkeypatch):
    """A loopback stand-in for Paddle's weights host serving the real Paddle-written tars of ``shared`` (through
    ``$IMGCLS_WEIGHTS_MIRROR``), with ``$IMGCLS_HOME`` in a fresh temp folder and the network allowed."""
    from imgcls.hub import MIRROR_ENV, OFFLINE_ENV

    from .weights_server import WeightsServer

    checkpoints = require_shared(PARITY / "checkpoints")
    with WeightsServer({p.name: p for p in checkpoints.glob("*_pretrained.tar")}) as server:
        monkeypatch.setenv("IMGCLS_HOME", str(tmp_path / "imgcls_home"))
        monkeypatch.setenv(MIRROR_ENV, server.url)
        monkeypatch.delenv(OFFLINE_ENV, raising=False)
        yield server
