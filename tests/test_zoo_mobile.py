"""Family checks for the mobile and classic zoo (ShuffleNetV2, MobileNetV1/V2, SqueezeNet, AlexNet, VGG, GoogLeNet,
Xception, InceptionV4) that the shared parity and model tests do not make: ShuffleNetV2_swish's activations, other
input sizes work where Paddle's program has a global pool, and GoogLeNet's aux heads reproduce Paddle's aux logits in
training mode. (That every Paddle tensor has a place: tests/test_models.py; that ``fused=True`` reaches every
fusable block: tests/test_fused_switch.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from imgcls.convert import paddle_to_state_dict
from imgcls.layers import DWConvBNAct
from imgcls.models import create_model

from .conftest import PARITY, require_shared
from .test_parity import _paddle_weights, assert_logits_close


def _fixture(name: str):
    path = require_shared(PARITY / "fixtures" / f"{name}.npz")
    return np.load(path, allow_pickle=False)


def test_shufflenet_swish_uses_swish_everywhere() -> None:
    with torch.device("meta"):
        model = create_model("ShuffleNetV2_swish")
    acts = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.SiLU))]
    assert acts and all(isinstance(m, nn.SiLU) for m in acts)
    # The depthwise convs of every unit are followed by BN alone.
    assert all(isinstance(m.act, nn.Identity) for m in model.modules() if isinstance(m, DWConvBNAct))


@pytest.mark.parametrize(
    ("name", "size"),
    [("ShuffleNetV2_x0_25", 256), ("MobileNetV2_x0_25", 160), ("MobileNetV1", 192), ("SqueezeNet1_1", 200)],
)
def test_other_input_sizes(name: str, size: int) -> None:
    model = create_model(name, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 10)


def test_googlenet_aux_heads_match_paddle() -> None:
    """Training mode returns (logits, [aux1, aux2]); with dropout switched off they are Paddle's three heads."""
    fx = _fixture("GoogLeNet")
    pw = _paddle_weights()
    tensors = pw.make_weights(pw.read_params_tsv(fx["params_tsv"]), int(fx["weight_seed"]), pw.fixture_calib(fx))
    model = create_model("GoogLeNet")
    model.load_state_dict(paddle_to_state_dict(tensors, "GoogLeNet"))
    assert model.aux_loss_weights == (0.3, 0.3)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    x = torch.from_numpy(pw.make_input(int(fx["input_size"]), int(fx["input_seed"])))
    with torch.no_grad():
        logits, aux = model(x)
    assert len(aux) == 2
    assert_logits_close(logits.numpy(), fx["logits"])
    assert_logits_close(aux[0].numpy(), fx["aux1_logits"])
    assert_logits_close(aux[1].numpy(), fx["aux2_logits"])
    model.eval()
    with torch.no_grad():
        assert isinstance(model(x), torch.Tensor)
