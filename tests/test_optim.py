"""LR strategies against values worked out by hand from Paddle's formulas; the optimizer against Paddle's update."""

from __future__ import annotations

import pytest
import torch

from imgcls.optim import LR_STRATEGIES, LRSchedule, build_optimizer, schedule_steps_per_epoch

SPE = 10  # steps per epoch in these hand computations


def schedule(strategy: str, num_epochs: int, **kw) -> LRSchedule:
    return LRSchedule(strategy, 0.1, SPE, num_epochs, **kw)


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.1), (299, 0.1), (300, 0.01), (599, 0.01), (600, 0.001), (900, 0.0001), (5000, 0.0001)],
)
def test_piecewise_decay(step, expected):
    assert schedule("piecewise_decay", 120).lr_at(step) == pytest.approx(expected, rel=1e-12)


def test_piecewise_decay_custom_boundaries():
    s = schedule("piecewise_decay", 10, step_epochs=(2, 5))
    assert [s.lr_at(i) for i in (19, 20, 49, 50)] == pytest.approx([0.1, 0.01, 0.01, 0.001])


@pytest.mark.parametrize(
    "step, expected",
    # epoch = floor(step / 10); lr = 0.1 * (cos(epoch * pi / 4) + 1) / 2, constant within an epoch
    [(0, 0.1), (9, 0.1), (10, 0.0853553390593), (19, 0.0853553390593), (25, 0.05), (39, 0.0146446609407)],
)
def test_cosine_decay(step, expected):
    assert schedule("cosine_decay", 4).lr_at(step) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.0),  # warmup: 0.1 * step / (5 * 10)
        (25, 0.05),
        (49, 0.098),
        (50, 0.1),  # cosine from here: 0.1 * (cos((step - 50) * pi / 100) + 1) / 2
        (75, 0.0853553390593),
        (99, 0.0515705380),
    ],
)
def test_cosine_decay_warmup(step, expected):
    assert schedule("cosine_decay_warmup", 10).lr_at(step) == pytest.approx(expected, rel=1e-8, abs=1e-15)


@pytest.mark.parametrize(
    "step, expected",
    # warmup 5 epochs, then 0.1 * 0.97 ** floor((step - 50) / 24)
    [(20, 0.04), (50, 0.1), (73, 0.1), (74, 0.097), (97, 0.097), (98, 0.09409), (122, 0.0912673)],
)
def test_exponential_decay_warmup(step, expected):
    assert schedule("exponential_decay_warmup", 20).lr_at(step) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("step, expected", [(0, 0.1), (10, 0.075), (20, 0.05), (39, 0.0025), (40, 0.0), (55, 0.0)])
def test_linear_decay(step, expected):
    assert schedule("linear_decay", 4).lr_at(step) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("step, expected", [(0, 0.1), (5, 0.05), (9, 0.01), (10, 0.0), (35, 0.0)])
def test_linear_decay_paddle_reaches_zero_after_one_epoch(step, expected):
    """Paddle's program: polynomial_decay over one epoch's steps, whatever num_epochs says."""
    assert schedule("linear_decay_paddle", 4).lr_at(step) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("images, batch, steps", [(64, 16, 4), (70, 16, 5), (1281167, 256, 5005), (8, 8, 1)])
def test_schedule_counts_paddles_steps_per_epoch(images, batch, steps):
    """ceil, as Paddle's optimizer; the loader's epoch is floor(images / batch) steps (tests/test_data.py)."""
    assert schedule_steps_per_epoch(images, batch) == steps


def test_unknown_strategy_and_bad_sizes():
    with pytest.raises(ValueError, match="unknown lr_strategy"):
        schedule("step_decay", 4)
    with pytest.raises(ValueError):
        LRSchedule("cosine_decay", 0.1, 0, 4)


def test_every_strategy_name_has_its_own_formula():
    """The name -> formula table covers every strategy, and no two names share a formula (distinct LR curves)."""
    curves = {
        name: tuple(schedule(name, 4, warm_up_epochs=1).lr_at(s) for s in range(0, 40, 3)) for name in LR_STRATEGIES
    }
    assert len(set(curves.values())) == len(LR_STRATEGIES)


def test_momentum_l2_matches_paddle_update():
    """Paddle Momentum + L2Decay: g' = g + l2 * w; v = mu * v + g'; w -= lr * v (two steps by hand)."""
    w0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    g1 = torch.tensor([0.3, 0.1, -0.2], dtype=torch.float64)
    g2 = torch.tensor([-0.1, 0.4, 0.05], dtype=torch.float64)
    lr, mu, l2 = 0.1, 0.9, 0.01
    model = torch.nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w0[None])
    opt = build_optimizer(model, lr, mu, l2)
    for g in (g1, g2):
        model.weight.grad = g[None].clone()
        opt.step()
    v1 = g1 + l2 * w0
    w1 = w0 - lr * v1
    v2 = mu * v1 + g2 + l2 * w1
    w2 = w1 - lr * v2
    torch.testing.assert_close(model.weight.detach()[0], w2, rtol=0, atol=1e-15)


def test_fractional_warmup_and_custom_cosine_warmup():
    """warm_up_epochs=0.5: linear warmup over 5 steps, then Paddle's cosine counted from the warmup's end."""
    s = schedule("cosine_decay_warmup", 4, warm_up_epochs=0.5)
    assert s.lr_at(0) == 0.0 and s.lr_at(4) == pytest.approx(0.08)
    assert s.lr_at(5) == pytest.approx(0.1)
    assert s.lr_at(25) == pytest.approx(0.05)  # cos((25 - 5) * pi / 40) = 0
    e = schedule("exponential_decay_warmup", 20, warm_up_epochs=0.5)
    assert e.lr_at(2) == pytest.approx(0.04) and e.lr_at(5 + 24) == pytest.approx(0.097)


def test_l2_decay_reaches_every_parameter_biases_and_bn_included(fresh_seed):
    """Paddle's L2Decay regularizer is global: conv and FC weights, their biases, BN scales and offsets all decay
    (two momentum steps worked out per tensor); BN's running statistics are buffers and never move."""
    from imgcls.layers import BatchNorm2d

    torch.manual_seed(fresh_seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, bias=True), BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4, 2, bias=True)
    ).double()
    with torch.no_grad():
        for p in model[1].parameters():  # BN starts at scale 1, offset 0: move it off so its decay shows
            p.add_(torch.rand_like(p) + 0.5)
    lr, mu, l2 = 0.1, 0.9, 0.05
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert len(start) == 6  # conv weight + bias, BN weight + bias, FC weight + bias
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    gen = torch.Generator().manual_seed(fresh_seed)
    grads = [{name: torch.randn(p.shape, generator=gen, dtype=p.dtype) for name, p in start.items()} for _ in "ab"]
    opt = build_optimizer(model, lr, mu, l2)
    for step_grads in grads:
        for name, p in model.named_parameters():
            p.grad = step_grads[name].clone()
        opt.step()
    for name, p in model.named_parameters():
        w0, (g1, g2) = start[name], (g[name] for g in grads)
        v1 = g1 + l2 * w0
        w1 = w0 - lr * v1
        w2 = w1 - lr * (mu * v1 + g2 + l2 * w1)
        torch.testing.assert_close(p.detach(), w2, rtol=0, atol=1e-14, msg=name)
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name
