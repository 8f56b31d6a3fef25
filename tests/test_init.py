"""Fresh weights follow the seed's Paddle 1.8 programs, for every registered model (parametrized over
``list_models()``), layer by layer.

The expected rule of each layer is transcribed here from PaddleCV image_classification ``models/*.py`` (release/1.8)
and fluid 1.8's defaults, independently of ``imgcls.models.paddle_init``:

- fluid ``conv2d`` default: Normal(0, sqrt(2 / (k*k*C))), C = ``input.shape[1]`` (all channels, grouped or not);
- fluid ``fc`` default (a ``ParamAttr`` without initializer): Xavier uniform, limit sqrt(6 / (fan_in + fan_out));
- ``MSRA()``: uniform, limit sqrt(6 / fan_in), fan_in from the weight's shape ``[out, C / groups, k, k]``;
- ``Uniform(-stdv, stdv)`` with the model file's own ``stdv``; biases without an initializer 0; BN scale 1, offset 0.

Each parameter's mean, standard deviation and bounds must match within sampling error (6 sigma), and a weight
expected normal must exceed the bound a uniform of its std could reach. Models over 150M parameters (the largest
WSL ResNeXts, whose rules their 32x8d sibling checks by default) run with ``-m slow``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from imgcls.models import create_model, get_model_cfg, list_models
from imgcls.models.paddle_init import init_like_paddle

SLOW_PARAMS = 150_000_000
BIG = {"ResNeXt101_32x16d_wsl", "ResNeXt101_32x32d_wsl", "ResNeXt101_32x48d_wsl", "Fix_ResNeXt101_32x48d_wsl"}
SAMPLE = 1 << 20  # elements of a tensor its mean / std are estimated on (they are i.i.d. draws)


def _all_fan_in(m: nn.Module) -> int:
    if isinstance(m, nn.Linear):
        return m.in_features
    return m.in_channels * m.kernel_size[0] * m.kernel_size[1]


def conv_default(m: nn.Module) -> tuple:
    """fluid.layers.conv2d: std = (2.0 / (filter_size[0] * filter_size[1] * num_channels)) ** 0.5."""
    return ("normal", (2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.in_channels)) ** 0.5)


def fc_default(m: nn.Module) -> tuple:
    """fluid.layers.fc: Xavier(uniform=True) on the [in, out] weight."""
    return ("uniform", (6.0 / (m.in_features + m.out_features)) ** 0.5)


def fluid_default(m: nn.Module) -> tuple:
    return fc_default(m) if isinstance(m, nn.Linear) else conv_default(m)


def msra(m: nn.Module) -> tuple:
    """MSRA(): _compute_fans on [out, C / groups, kh, kw] (or [in, out] for an fc)."""
    if isinstance(m, nn.Linear):
        return ("uniform", (6.0 / m.in_features) ** 0.5)
    return ("uniform", (6.0 / (m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1])) ** 0.5)


def stdv(m: nn.Module, k: float = 1.0) -> tuple:
    """Uniform(-stdv, stdv), stdv = sqrt(k / (input.shape[1] * k * k)) as the model files compute it."""
    return ("uniform", (k / _all_fan_in(m)) ** 0.5)


ZERO = ("zeros", 0.0)


def _resnet_like(name: str, m: nn.Module) -> tuple:
    # resnet*.py, resnext*.py, resnext101_wsl.py, densenet.py, darknet.py, xception.py: out = fc(pool,
    # param_attr=ParamAttr(initializer=Uniform(-stdv, stdv))), stdv = 1 / sqrt(pool.shape[1]); convs: no initializer.
    return (stdv(m), ZERO) if name == "fc" else (conv_default(m), ZERO)


def _se_resnext(name: str, m: nn.Module) -> tuple:
    # se_resnext.py / se_resnext_vd.py: the classifier and squeeze_excitation's squeeze / excitation fcs use
    # Uniform(-stdv, stdv), stdv = 1 / sqrt(their input.shape[1]); offsets ParamAttr(name) only.
    if isinstance(m, nn.Linear):
        return (stdv(m), ZERO)
    return (conv_default(m), ZERO)


def _googlenet(name: str, m: nn.Module) -> tuple:
    # googlenet.py: conv_layer and xavier(channels, 1): Uniform(-sqrt(3 / (k*k*channels)), ...); the _3x3_proj
    # conv2d after the pool has ParamAttr(name) only. FC channels: out / out1 1024, fc_o1 / fc_o2 2048.
    if name.endswith("branch_proj"):
        return (conv_default(m), ZERO)
    if isinstance(m, nn.Linear):
        channels = {"fc": 1024, "aux1.out": 1024, "aux2.out": 1024, "aux1.fc": 2048, "aux2.fc": 2048}[name]
        return (("uniform", (3.0 / channels) ** 0.5), ZERO)
    return (stdv(m, 3.0), ZERO)


# family -> (qualified module name, module) -> (weight rule, bias rule)
SEED_RULES = {
    # alexnet.py: every conv and fc has param_attr and bias_attr Uniform(-stdv, stdv), stdv = 1/sqrt(C*k*k).
    "alexnet": lambda name, m: (stdv(m), stdv(m)),
    # squeezenet.py, vgg.py, mobilenet_v2.py: ParamAttr(name=...) everywhere: fluid's defaults.
    "squeezenet": lambda name, m: (fluid_default(m), ZERO),
    "vgg": lambda name, m: (fluid_default(m), ZERO),
    "mobilenet_v2": lambda name, m: (fluid_default(m), ZERO),
    # mobilenet_v1.py, shufflenet_v2*.py: ParamAttr(initializer=MSRA()) on every conv and the fc.
    "mobilenet_v1": lambda name, m: (msra(m), ZERO),
    "shufflenet_v2": lambda name, m: (msra(m), ZERO),
    "resnet": _resnet_like,
    "resnext": _resnet_like,
    "resnext_wsl": _resnet_like,
    "densenet": _resnet_like,
    "darknet": _resnet_like,
    "xception": _resnet_like,
    "se_resnext": _se_resnext,
    # inception_v4.py: final_fc weight and offset both Uniform(-stdv, stdv), stdv = 1 / sqrt(drop.shape[1]).
    "inception_v4": lambda name, m: (stdv(m), stdv(m)) if name == "fc" else (conv_default(m), ZERO),
    "googlenet": _googlenet,
}


def check_tensor(t: torch.Tensor, rule: tuple, where: str) -> None:
    """``t`` is a draw of ``rule`` ((kind, std or limit)) within 6 sigma of sampling error."""
    kind, scale = rule
    if kind == "zeros":
        assert torch.count_nonzero(t) == 0, f"{where}: expected zeros"
        return
    if kind == "ones":
        assert bool((t == 1).all()), f"{where}: expected ones"
        return
    peak = t.abs().max().item()
    x = t.detach().flatten()[:SAMPLE].double()
    n = x.numel()
    if kind == "uniform":
        sd, rel = scale / math.sqrt(3.0), math.sqrt(0.2 / n)  # sd of the sample std: kurtosis 1.8
        assert peak <= scale * (1 + 1e-6), f"{where}: |w| reaches {peak:.4g} > uniform limit {scale:.4g}"
        if n >= 200:
            assert peak > 0.9 * scale, f"{where}: |w| <= {peak:.4g}, far inside the uniform limit {scale:.4g}"
    else:
        sd, rel = scale, math.sqrt(0.5 / n)
        if n >= 200:  # a uniform of this std never exceeds sqrt(3) sd; a normal sample this size does
            assert peak > 1.8 * sd, f"{where}: |w| <= {peak:.4g}: not normal with std {sd:.4g}"
    std, mean = torch.std_mean(x, correction=0)
    assert abs(mean.item()) <= 6 * sd / math.sqrt(n) + 1e-12, f"{where}: mean {mean.item():.4g} (std {sd:.4g})"
    assert abs(std.item() / sd - 1) <= 6 * rel + 1e-3, f"{where}: std {std.item():.5g}, expected {sd:.5g} ({kind})"


def check_model(model: nn.Module, family: str) -> int:
    """Every parameter of ``model`` follows the seed's rule for its layer; returns the layers checked."""
    checked = 0
    for name, m in model.named_modules():
        params = dict(m.named_parameters(recurse=False))
        if not params:
            continue
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            rules = (("ones", 1.0), ZERO)
            assert bool((m.running_mean == 0).all() and (m.running_var == 1).all()), f"{name}: moving stats"
        else:
            assert isinstance(m, (nn.Conv2d, nn.Linear)), f"{name}: {type(m).__name__} has no transcribed rule"
            rules = SEED_RULES[family](name, m)
        check_tensor(params["weight"], rules[0], f"{name}.weight")
        if params.get("bias") is not None:
            check_tensor(params["bias"], rules[1], f"{name}.bias")
        checked += 1
    return checked


def _size(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in create_model(name).parameters())


@pytest.fixture(scope="module")
def sizes() -> dict[str, int]:
    return {name: _size(name) for name in list_models()}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in list_models()])
def test_fresh_weights_follow_the_seed(name: str) -> None:
    assert get_model_cfg(name).family in SEED_RULES, f"no transcribed rules for {name}'s family"
    torch.manual_seed(0)
    model = create_model(name, num_classes=1000)
    assert check_model(model, get_model_cfg(name).family) > 0


def test_the_slow_set_is_the_big_models(sizes: dict[str, int]) -> None:
    assert {n for n, size in sizes.items() if size > SLOW_PARAMS} == BIG


def test_draws_follow_the_torch_seed() -> None:
    torch.manual_seed(3)
    a = create_model("MobileNetV1").state_dict()
    torch.manual_seed(3)
    b = create_model("MobileNetV1").state_dict()
    torch.manual_seed(4)
    c = create_model("MobileNetV1").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc.weight"], c["fc.weight"])


def test_torch_init_keeps_torch_defaults() -> None:
    """``init="torch"``: torch's kaiming_uniform(a=sqrt(5)) convs (limit 1 / sqrt(per-group fan_in))."""
    torch.manual_seed(0)
    model = create_model("ResNet18", init="torch")
    conv = model.stages[3][1].conv2.conv
    check_tensor(conv.weight, ("uniform", 1 / math.sqrt(conv.weight[0].numel())), "torch conv")
    with pytest.raises(ValueError, match="unknown init 'xavier'"):
        create_model("ResNet18", init="xavier")


def test_unknown_layer_with_parameters_is_refused() -> None:
    with pytest.raises(TypeError, match="no Paddle initializer known for 0"):
        init_like_paddle(nn.Sequential(nn.LayerNorm(4)))
