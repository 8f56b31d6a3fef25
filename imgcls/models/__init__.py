"""The model zoo: ``create_model(name, num_classes=..., fused=..., pretrained=...)``, ``list_models(pattern,
pretrained=...)``, ``model_info(name)``.

Importing this package registers every family (one module each, in the order of Paddle's tables). A family's
builders take ``num_classes`` and the family's own options, never ``fused``: ``create_model`` flips the built
model's fusable blocks through the one switch, ``imgcls.layers.set_fused``.
"""

from . import (  # noqa: F401, I001  (imported for their registrations, in the order of Paddle's tables)
    alexnet,
    squeezenet,
    vgg,
    mobilenet_v1,
    mobilenet_v2,
    shufflenet_v2,
    resnet,
    resnext,
    densenet,
    se_resnext,
    googlenet,
    xception,
    inception_v4,
    darknet,
    resnext_wsl,
)
from ._registry import (
    ModelCfg,
    canonical_name,
    get_model_cfg,
    list_models,
    model_info,
    register_alias,
    register_model,
)
from .factory import create_model

__all__ = [
    "ModelCfg",
    "canonical_name",
    "create_model",
    "get_model_cfg",
    "list_models",
    "model_info",
    "register_alias",
    "register_model",
]
