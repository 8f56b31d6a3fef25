"""Every zoo model, given the fixture rule's Paddle-layout weights through our converter, reproduces the logits of
the original Paddle 1.8.5 program (shared/paddle_parity). Tolerance from its README: rel_l2 <= 1e-4 and
max_abs <= 1e-4 * max|logits|.

Models over 150M values are marked slow (run them with ``pytest -m slow tests/test_parity.py``). Without the shared
fixtures these tests skip, and fail on CI (``CI`` set): a green CI run has checked parity.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imgcls.convert import paddle_to_state_dict, read_paddle_checkpoint
from imgcls.models import create_model

from .conftest import PARITY, require_shared, shared_missing, shared_module

SLOW_VALUES = 150_000_000


def _fixtures() -> list:
    index = PARITY / "fixtures" / "index.tsv"
    if not index.exists():
        return [pytest.param(None, id="no-fixtures")]  # the test reports it: a skip, or a failure on CI
    params = []
    for line in index.read_text().splitlines()[1:]:
        cols = line.split("\t")
        marks = [pytest.mark.slow] if int(cols[5]) > SLOW_VALUES else []
        params.append(pytest.param(cols[0], marks=marks, id=cols[0].removesuffix(".npz")))
    return params


def _paddle_weights():
    return shared_module(PARITY, "paddle_weights")


def assert_logits_close(out: np.ndarray, ref: np.ndarray) -> None:
    out, ref = out.astype(np.float64), ref.astype(np.float64)
    rel_l2 = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    max_abs = np.abs(out - ref).max()
    assert rel_l2 <= 1e-4 and max_abs <= 1e-4 * np.abs(ref).max(), f"rel_l2={rel_l2:.3g} max_abs={max_abs:.3g}"


def run_fixture(fixture_file: str) -> None:
    pw = _paddle_weights()
    fx = np.load(PARITY / "fixtures" / fixture_file, allow_pickle=False)
    entries = pw.read_params_tsv(fx["params_tsv"])
    tensors = pw.make_weights(entries, int(fx["weight_seed"]), pw.fixture_calib(fx))
    assert pw.weights_crc32(tensors, entries) == int(fx["weights_crc32"]), "numpy does not reproduce the rule"
    x = pw.make_input(int(fx["input_size"]), int(fx["input_seed"]))
    name = str(fx["model"])
    # Built on the meta device and given the converted tensors themselves (assign): no random init and no second
    # copy of the weights, which keeps the 829M-parameter WSL models within a 24 GB machine.
    with torch.device("meta"):
        model = create_model(name, num_classes=1000)
    model.load_state_dict(paddle_to_state_dict(tensors, name), strict=True, assign=True)
    del tensors
    left = [k for k, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    assert not left, f"{name}: not loaded: {left[:5]}"
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x)).numpy()
    assert_logits_close(out, fx["logits"])


@pytest.mark.parametrize("fixture_file", _fixtures())
def test_paddle_parity(fixture_file: str | None) -> None:
    if fixture_file is None:
        shared_missing(PARITY / "fixtures" / "index.tsv")
    run_fixture(fixture_file)


@pytest.mark.parametrize("model", ["ShuffleNetV2_x0_25", "SqueezeNet1_1"])
@pytest.mark.parametrize("form", ["tar", "folder"])
def test_real_paddle_checkpoint(parity_dir, model: str, form: str) -> None:
    """The two checkpoints written by Paddle itself load through the reader and give the fixture's logits."""
    path = parity_dir / "checkpoints" / (f"{model}_pretrained" + (".tar" if form == "tar" else ""))
    tensors = read_paddle_checkpoint(path)
    net = create_model(model, num_classes=1000).eval()
    net.load_state_dict(paddle_to_state_dict(tensors, model), strict=True)
    fx = np.load(parity_dir / "fixtures" / f"{model}.npz", allow_pickle=False)
    x = _paddle_weights().make_input(int(fx["input_size"]), int(fx["input_seed"]))
    with torch.no_grad():
        out = net(torch.from_numpy(x)).numpy()
    assert_logits_close(out, fx["logits"])


@pytest.mark.parametrize("ci", ["", "true"])
def test_missing_shared_data_skips_or_fails_on_ci(monkeypatch: pytest.MonkeyPatch, tmp_path, ci: str) -> None:
    """The rule the tests above rely on: absent ground truth is a skip in a user's clone, a failure on CI."""
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="nowhere"):
        require_shared(tmp_path / "nowhere")
    assert require_shared(tmp_path) == tmp_path
