"""ResNeXt101 32xNd trained with weak supervision on Instagram hashtags (Mahajan et al. 2018; FixRes for the Fix_
model), as Paddle's 2019 ports of the PyTorch Hub models build them.

The network is torchvision's ResNeXt101 with 32 groups of N channels at the first stage (the Paddle blocks and
stem are ours from ``resnet.py``); Paddle kept the PyTorch tensor names (``layer1.0.conv1.weight``,
``layer1.0.downsample.1.running_mean``, ...), with the FC weight stored [in, out] like every Paddle FC.
Fix_ResNeXt101_32x48d_wsl is the same network fine-tuned at 320 px.
"""

from __future__ import annotations

from ._paddle_names import TORCH_BN, conv_bn_names, linear_names
from ._registry import ModelCfg, paddle_tar, register_model
from .paddle_init import uniform_fan_in
from .resnet import DEPTHS, ResNet, ResNetSpec, block_convs, iter_blocks

OUT_CHANNELS = (256, 512, 1024, 2048)
TORCH_BN_SUFFIXES = tuple("." + s for s in TORCH_BN)
# our conv-BN prefix inside a block -> (PyTorch conv name, PyTorch BN name)
WSL_CONV = {
    "conv1": ("conv1", "bn1"),
    "conv2": ("conv2", "bn2"),
    "conv3": ("conv3", "bn3"),
    "shortcut.proj": ("downsample.0", "downsample.1"),
}


def wsl_spec(group_width: int) -> ResNetSpec:
    """ResNeXt101_32x<group_width>d: inner width ``32 * group_width * 2^stage``."""
    widths = tuple(32 * group_width * 2**s for s in range(4))
    return ResNetSpec(DEPTHS[101], widths, OUT_CHANNELS, groups=32)


def paddle_names(model: ResNet) -> dict[str, str]:
    """PyTorch-style names: ``conv1.weight``, ``bn1.*``, ``layer<s+1>.<i>.conv<k>.weight``, ..., ``fc.*``."""
    names = conv_bn_names("stem.0", "conv1.weight", "bn1", TORCH_BN_SUFFIXES)
    for key, s, i, _, block in iter_blocks(model):
        for attr in block_convs(block):
            conv, bn = WSL_CONV[attr]
            prefix = f"layer{s + 1}.{i}."
            names |= conv_bn_names(f"{key}.{attr}", prefix + conv + ".weight", prefix + bn, TORCH_BN_SUFFIXES)
    return names | linear_names("fc", "fc.weight", "fc.bias")


# resnext101_wsl.py: convs take fluid's default; the FC ~ Uniform(-stdv, stdv), stdv = 1 / sqrt(C).
PADDLE_INIT = (("fc", uniform_fan_in()),)


def _cfg(name: str, top1: float, top5: float, size: int = 224, resize_short: int = 256) -> ModelCfg:
    return ModelCfg(
        name,
        "resnext_wsl",
        input_size=size,
        resize_short=resize_short,
        top1=top1,
        top5=top5,
        weights=paddle_tar(name),
        paddle_names=paddle_names,
        init_rules=PADDLE_INIT,
    )


@register_model(_cfg("ResNeXt101_32x8d_wsl", 82.55, 96.74))
def resnext101_32x8d_wsl(num_classes: int = 1000) -> ResNet:
    """ResNeXt101 32x8d WSL (88.8M parameters)."""
    return ResNet(wsl_spec(8), num_classes)


@register_model(_cfg("ResNeXt101_32x16d_wsl", 84.24, 97.26))
def resnext101_32x16d_wsl(num_classes: int = 1000) -> ResNet:
    """ResNeXt101 32x16d WSL (194M parameters)."""
    return ResNet(wsl_spec(16), num_classes)


@register_model(_cfg("ResNeXt101_32x32d_wsl", 84.97, 97.59))
def resnext101_32x32d_wsl(num_classes: int = 1000) -> ResNet:
    """ResNeXt101 32x32d WSL (469M parameters)."""
    return ResNet(wsl_spec(32), num_classes)


@register_model(_cfg("ResNeXt101_32x48d_wsl", 85.37, 97.69))
def resnext101_32x48d_wsl(num_classes: int = 1000) -> ResNet:
    """ResNeXt101 32x48d WSL (829M parameters)."""
    return ResNet(wsl_spec(48), num_classes)


@register_model(_cfg("Fix_ResNeXt101_32x48d_wsl", 86.26, 97.97, size=320, resize_short=320))
def fix_resnext101_32x48d_wsl(num_classes: int = 1000) -> ResNet:
    """ResNeXt101 32x48d WSL fine-tuned at 320 px (FixRes); the same network."""
    return ResNet(wsl_spec(48), num_classes)
