"""The fused switch, ``imgcls.layers.set_fused``, is the one way blocks reach their Triton kernels.

- builders and block constructors take no ``fused`` (so it cannot be threaded through the zoo again);
- ``create_model(name, fused=True)`` switches every fusable block of every family on, and nothing else;
- after BN is made synchronized (DDP ``--sync_bn``) the same switch keeps the depthwise blocks on their reference
  path: their kernel would normalize with one rank's statistics. No kernel runs here (meta device / CPU).
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from imgcls import distributed as dist
from imgcls.layers import ChannelShuffle, DWConvBNAct, FusableBlock, SqueezeExcite, count_fused, fused, set_fused
from imgcls.models import create_model, get_model_cfg, list_models
from imgcls.models._registry import _BUILDERS  # every registered builder, for its signature

# family -> the fusable block types its models hold; every other family holds none.
FUSABLE_BY_FAMILY = {
    "mobilenet_v1": {DWConvBNAct},
    "mobilenet_v2": {DWConvBNAct},
    "shufflenet_v2": {DWConvBNAct, ChannelShuffle},
    "se_resnext": {SqueezeExcite},
    "xception": {DWConvBNAct},
}


def meta_model(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kw)


def all_subclasses(cls: type) -> set[type]:
    return {sub for direct in cls.__subclasses__() for sub in {direct, *all_subclasses(direct)}}


@pytest.mark.parametrize("name", list_models())
def test_create_model_fused_switches_exactly_the_fusable_blocks(name: str) -> None:
    model, plain = meta_model(name, fused=True), meta_model(name)
    blocks = [m for m in model.modules() if isinstance(m, FusableBlock)]
    assert {type(m) for m in blocks} == FUSABLE_BY_FAMILY.get(get_model_cfg(name).family, set())
    assert all(m.fused for m in blocks)
    assert not any(getattr(m, "fused", False) for m in model.modules() if not isinstance(m, FusableBlock))
    assert not any(getattr(m, "fused", False) for m in plain.modules())
    assert list(model.state_dict()) == list(plain.state_dict())  # checkpoints interchange
    assert count_fused(set_fused(model, False)) == 0


@pytest.mark.parametrize("name", list_models())
def test_builders_take_no_fused_keyword(name: str) -> None:
    builder = _BUILDERS[name]
    assert "fused" not in inspect.signature(builder).parameters
    with torch.device("meta"), pytest.raises(TypeError, match="fused"):
        builder(num_classes=10, fused=True)  # not through **kwargs into a constructor either


def test_block_constructors_take_no_fused_keyword() -> None:
    blocks = all_subclasses(FusableBlock)
    assert {DWConvBNAct, ChannelShuffle, SqueezeExcite} <= blocks
    for cls in blocks:
        assert "fused" not in inspect.signature(cls).parameters, cls.__name__
        assert cls.fused is False  # a new block starts on its reference path


SYNC_CONVERTERS = [dist.convert_cpu_sync_bn, dist.convert_cuda_sync_bn, nn.SyncBatchNorm.convert_sync_batchnorm]


@pytest.mark.parametrize("convert", SYNC_CONVERTERS, ids=["CpuSyncBatchNorm", "CudaSyncBatchNorm", "SyncBatchNorm"])
def test_switch_keeps_synced_blocks_on_their_reference_path(convert, monkeypatch) -> None:
    model = create_model("ShuffleNetV2_x0_25", num_classes=10, fused=True)
    depthwise = [m for m in model.modules() if isinstance(m, DWConvBNAct)]
    shuffles = [m for m in model.modules() if isinstance(m, ChannelShuffle)]
    assert depthwise and shuffles and all(m.fused for m in depthwise + shuffles)
    model = convert(model)
    assert all(type(m.bn) is not nn.BatchNorm2d and type(m.bn).__name__ in m.kernel_unsupported for m in depthwise)
    # Before the switch runs again the forward already declines the kernel: it reads kernel_unsupported per call.
    monkeypatch.setattr(fused, "fused_supported", lambda x: True)
    x = torch.zeros(1, 4, 3, 3)
    assert all(m.fused and not fused.use_fused(m, x) for m in depthwise)
    set_fused(model, True)
    assert not any(m.fused for m in depthwise)
    assert all(m.fused and fused.use_fused(m, x) for m in shuffles)  # no BN: the kernel still serves them


def test_convert_sync_bn_reports_the_blocks_it_holds_back(capsys) -> None:
    info = dist.DistInfo(world_size=2, backend="gloo")  # the conversion needs no process group
    model = create_model("ShuffleNetV2_x0_25", num_classes=10, fused=True)
    n_depthwise = sum(isinstance(m, DWConvBNAct) for m in model.modules())
    n_shuffles = sum(isinstance(m, ChannelShuffle) for m in model.modules())
    dist.convert_sync_bn(model, info)
    line = f"sync_bn: {n_depthwise} fused blocks run their reference path (the fused kernel keeps per-rank stats)"
    assert capsys.readouterr().out.splitlines() == [line]
    assert count_fused(model) == n_shuffles
    dist.convert_sync_bn(create_model("ShuffleNetV2_x0_25", num_classes=10), info)
    assert capsys.readouterr().out == ""  # not fused: nothing held back, nothing said
