"""The zoo's BatchNorm2d against a float64 oracle of Paddle 1.x's batch_norm: training normalizes with the batch mean
and biased variance and moves the running statistics toward exactly those; everything else is torch's BatchNorm2d
(outputs, gradients, eval, state_dict)."""

from __future__ import annotations

import pytest
import torch
from imgcls.kernels.references import batch_norm, dwconv_bn_act
from torch import nn

from imgcls.layers import BN_EPS, BN_MOMENTUM, BatchNorm2d

EXACT = dict(rtol=1e-12, atol=1e-12)


def batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and BIASED variance, in float64."""
    xd = x.double().transpose(0, 1).reshape(x.shape[1], -1)
    mean = xd.mean(1)
    return mean, ((xd - mean[:, None]) ** 2).mean(1)


def paddle_update(running: torch.Tensor, batch: torch.Tensor, momentum: float) -> torch.Tensor:
    """Paddle's moving average (its momentum 0.9 is our 1 - momentum)."""
    return (1 - momentum) * running.double() + momentum * batch


def twin_bns(channels: int, seed: int, **kwargs) -> tuple[BatchNorm2d, nn.BatchNorm2d]:
    """Ours and torch's, float64, with the same random affine parameters and running statistics."""
    ours = BatchNorm2d(channels, **kwargs).double()
    torchs = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM, **kwargs).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in ours.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=gen, dtype=value.dtype) + 0.5)
    torchs.load_state_dict(ours.state_dict())
    return ours, torchs


def random_input(shape: tuple[int, ...], seed: int, layout: str = "nchw") -> torch.Tensor:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 + 0.3
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (8, 5, 1, 1), (3, 4, 2, 9)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_training_step_follows_paddle(fresh_seed: int, shape: tuple[int, ...], layout: str) -> None:
    ours, torchs = twin_bns(shape[1], fresh_seed)
    mean0, var0 = ours.running_mean.clone(), ours.running_var.clone()
    x = random_input(shape, fresh_seed + 1, layout)
    mean, var = batch_stats(x)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, ref = ours(xa), torchs(xb)
    torch.testing.assert_close(out, ref, **EXACT)  # the same normalization, by the biased variance
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(fresh_seed + 2), dtype=torch.float64)
    out.backward(grad), ref.backward(grad)
    for a, b in ((xa.grad, xb.grad), (ours.weight.grad, torchs.weight.grad), (ours.bias.grad, torchs.bias.grad)):
        torch.testing.assert_close(a, b, **EXACT)
    torch.testing.assert_close(ours.running_mean, paddle_update(mean0, mean, BN_MOMENTUM), **EXACT)
    torch.testing.assert_close(ours.running_var, paddle_update(var0, var, BN_MOMENTUM), **EXACT)
    # torch's own moves toward var * M / (M - 1): what this class exists to avoid
    count = x.numel() // x.shape[1]
    torch.testing.assert_close(torchs.running_var - ours.running_var, BN_MOMENTUM * var / (count - 1), **EXACT)
    assert int(ours.num_batches_tracked) == 1


def test_eval_and_state_dict_are_torchs(fresh_seed: int) -> None:
    ours, torchs = twin_bns(6, fresh_seed)
    assert list(ours.state_dict()) == list(torchs.state_dict())  # checkpoints load either way
    ours.eval(), torchs.eval()
    x = random_input((2, 6, 4, 3), fresh_seed)
    torch.testing.assert_close(ours(x), torchs(x), **EXACT)
    assert int(ours.num_batches_tracked) == 0


def test_momentum_none_is_a_cumulative_average_of_biased_variances(fresh_seed: int) -> None:
    bn = BatchNorm2d(3, momentum=None).double()
    xs = [random_input((4, 3, 3, 2), fresh_seed + i) for i in range(3)]
    for x in xs:
        bn(x)
    means, variances = zip(*(batch_stats(x) for x in xs))
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0), **EXACT)
    torch.testing.assert_close(bn.running_var, torch.stack(variances).mean(0), **EXACT)


def test_untracked_statistics_train_as_torch(fresh_seed: int) -> None:
    ours, torchs = twin_bns(4, fresh_seed, track_running_stats=False)
    x = random_input((3, 4, 5, 5), fresh_seed)
    torch.testing.assert_close(ours(x), torchs(x), **EXACT)
    assert ours.running_mean is None


def test_low_precision_input_updates_fp32_statistics(fresh_seed: int) -> None:
    """bf16 activations (autocast on CPU): the fp32 running statistics move toward the batch's biased variance."""
    bn = BatchNorm2d(5)
    x = random_input((4, 5, 6, 6), fresh_seed).to(torch.bfloat16)
    out = bn(x)
    mean, var = batch_stats(x.float())
    assert out.dtype == torch.bfloat16 and bn.running_var.dtype == torch.float32
    torch.testing.assert_close(bn.running_mean.double(), paddle_update(torch.zeros(5), mean, BN_MOMENTUM))
    torch.testing.assert_close(bn.running_var.double(), paddle_update(torch.ones(5), var, BN_MOMENTUM))


def test_dwconv_reference_moves_paddle_statistics(fresh_seed: int) -> None:
    """The fused kernel's reference (what tests/kernels holds the kernel to) takes the same update."""
    gen = torch.Generator().manual_seed(fresh_seed)
    x, w = torch.randn(2, 4, 7, 6, generator=gen).double(), torch.randn(4, 1, 3, 3, generator=gen).double()
    gamma, beta = torch.rand(4, generator=gen).double() + 0.5, torch.randn(4, generator=gen).double()
    rm, rv = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    dwconv_bn_act(x, w, gamma, beta, rm, rv, training=True, momentum=0.1, eps=1e-5, stride=2, act="swish")
    mean, var = batch_stats(torch.nn.functional.conv2d(x, w, None, 2, 1, groups=4))
    torch.testing.assert_close(rm, paddle_update(torch.zeros(4), mean, 0.1), **EXACT)
    torch.testing.assert_close(rv, paddle_update(torch.ones(4), var, 0.1), **EXACT)


def test_functional_form_without_running_statistics_is_torchs(fresh_seed: int) -> None:
    x = random_input((2, 3, 4, 4), fresh_seed)
    torch.testing.assert_close(
        batch_norm(x, None, None, None, None, True, 0.1, 1e-5), nn.functional.batch_norm(x, None, None, training=True)
    )
