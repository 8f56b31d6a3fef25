"""Mixup end to end: one training step against a mixed batch and loss worked out here, and the CLI flag reaching
the step. The draws follow the documented rule (numpy's default_rng(seed): lam ~ Beta(alpha, alpha), then a
permutation), written out here rather than taken from ``mixup_batch``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from imgcls import engine
from imgcls.config import LossConfig
from imgcls.randomness import mixup_seed

from .cli_helpers import run_train, tiny_shapes, tiny_train

ALPHA, SEED, LR = 0.4, 20260, 0.5


class Recorder(nn.Module):
    """A linear classifier on the flattened image that keeps the batch it was given."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, classes)
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return self.fc(x.flatten(1))


class ConstantLR:
    def lr_at(self, step: int) -> float:
        return LR


def expected_step(images, labels, weight, bias):
    """(mixed images, mixed loss, weight and bias after one plain SGD step), all in float64 by hand."""
    rng = np.random.default_rng(SEED)
    lam = float(rng.beta(ALPHA, ALPHA))
    perm = torch.from_numpy(rng.permutation(images.shape[0]))
    assert 0.1 < lam < 0.9 and not torch.equal(perm, torch.arange(len(perm))), "a draw that would not show mixing"
    mixed = lam * images + (1 - lam) * images[perm]
    w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    logits = mixed.flatten(1) @ w.T + b
    log_p = logits - logits.exp().sum(1, keepdim=True).log()
    rows = torch.arange(len(labels))
    loss = -(lam * log_p[rows, labels] + (1 - lam) * log_p[rows, labels[perm]]).mean()
    loss.backward()
    return mixed, loss.detach(), (weight - LR * w.grad), (bias - LR * b.grad)


def test_train_step_mixes_the_images_and_the_loss():
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(6, 3, 2, 2, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 1, 2])
    model = Recorder(12, 4).double()
    weight, bias = model.fc.weight.detach().clone(), model.fc.bias.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    result = engine.train_step(
        model, images, labels, optimizer, ConstantLR(), 0, loss_cfg=LossConfig(mixup_alpha=ALPHA), mix_seed=SEED
    )
    mixed, loss, new_weight, new_bias = expected_step(images, labels, weight, bias)
    torch.testing.assert_close(model.seen, mixed, rtol=1e-12, atol=1e-12)
    assert result.loss.item() == pytest.approx(loss.item(), rel=1e-12)
    torch.testing.assert_close(model.fc.weight.detach(), new_weight, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.fc.bias.detach(), new_bias, rtol=1e-12, atol=1e-12)


def test_train_step_without_mixup_sees_the_batch_as_is():
    images = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3])
    model = Recorder(12, 4).double()
    logits = model.fc(images.flatten(1)).detach()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    result = engine.train_step(model, images, labels, optimizer, ConstantLR(), 0, mix_seed=SEED)
    assert torch.equal(model.seen, images)
    log_p = logits - logits.exp().sum(1, keepdim=True).log()
    assert result.loss.item() == pytest.approx(-log_p[torch.arange(4), labels].mean().item(), rel=1e-12)


@pytest.mark.parametrize("flags,alpha", [(["--use_mixup", "--mixup_alpha=0.3"], 0.3), ([], None)])
def test_use_mixup_reaches_every_training_step(tmp_path, monkeypatch, flags, alpha):
    """``--use_mixup`` (with its alpha) mixes every training step, with the per-iteration seed; without it, none."""
    calls = []
    real = engine.mixup_batch

    def spy(images, labels, a, seed):
        calls.append((a, seed))
        return real(images, labels, a, seed)

    monkeypatch.setattr(engine, "mixup_batch", spy)
    data = tiny_shapes(tmp_path / "data", num_train=32, num_val=8)
    run_train(*tiny_train(data, tmp_path / "out", "--num_epochs=1", "--random_seed=5", *flags))
    if alpha is None:
        assert calls == []
    else:  # 32 images, batch 16: two steps in epoch 0
        assert calls == [(alpha, mixup_seed(5, 0, 0)), (alpha, mixup_seed(5, 0, 1))]
