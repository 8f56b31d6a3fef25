"""Whole zoo models with fused blocks against the same weights in reference mode (``set_fused``).

Sizes are tiny for the interpreter; 48 px keeps 2x2 maps (8 values per channel at N = 2) in the last stage, so
training-mode BN is not dominated by the ill-conditioned 2-sample statistics of 1x1 maps.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn

from imgcls.layers import set_fused
from imgcls.models import create_model

from ..fused_guard import assert_kernels_ran
from .conftest import DEVICE, assert_close, reference_forbidden


def pair(name: str, num_classes: int = 10) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ref = create_model(name, num_classes=num_classes).to(DEVICE)
    return ref, set_fused(copy.deepcopy(ref), True)


def test_shufflenet_v2_swish_train_steps():
    """Three SGD steps from the same weights: every gradient and BN buffer of the first step match, then the loss
    curve and the eval-mode logits (one test, as each interpreted forward + backward costs ~10 s)."""
    ref, fused = pair("ShuffleNetV2_swish")
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(2, 3, 48, 48, generator=gen).to(DEVICE), torch.randint(0, 10, (2,), generator=gen).to(DEVICE)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (fused, ref)]
    curves = [[], []]
    for step in range(3):
        for model, opt, curve in zip((fused, ref), opts, curves):
            with reference_forbidden() if model is fused else contextlib.nullcontext() as log:
                logits = model(x)
                loss = nn.functional.cross_entropy(logits, y)
                opt.zero_grad()
                loss.backward()
            if model is fused:
                assert_kernels_ran(fused, log)
            curve.append(loss.item())
            if step == 0:
                model.first_logits = logits.detach()
        if step == 0:
            assert_close(fused.first_logits, ref.first_logits, 1e-4, "logits")
            ref_params, ref_state = dict(ref.named_parameters()), ref.state_dict()
            for name, p in fused.named_parameters():
                assert_close(p.grad, ref_params[name].grad, 1e-3, name)
            for name, t in fused.state_dict().items():
                assert_close(t, ref_state[name], 1e-4, name)
        for opt in opts:
            opt.step()
    assert_close(torch.tensor(curves[0]), torch.tensor(curves[1]), 1e-3, f"loss curves {curves}")
    assert curves[1][-1] < curves[1][0], "the reference did not learn; the comparison would be vacuous"
    fused.eval(), ref.eval()
    with torch.no_grad():
        with reference_forbidden() as log:
            out = fused(x)
        assert_kernels_ran(fused, log)
        assert_close(out, ref(x), 1e-3, "eval logits after training")


@pytest.mark.parametrize("name,size", [("MobileNetV2_x0_25", 32), ("SE_ResNeXt50_32x4d", 32)])
def test_eval_forward(name, size):
    """Eval mode: BN folded into the depthwise kernels; SE with the fused residual tail."""
    ref, fused = pair(name)
    ref.eval(), fused.eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    with torch.no_grad():
        with reference_forbidden() as log:
            out = fused(x)
        assert_kernels_ran(fused, log)
        assert_close(out, ref(x), 1e-4, name)
