"""Building blocks shared by the zoo; the ``FusableBlock`` ones switch to Triton kernels through ``set_fused``."""

from .activations import make_activation
from .batch_norm import BN_EPS, BN_MOMENTUM, BatchNorm2d
from .channel_shuffle import ChannelShuffle, channel_shuffle_reference
from .conv_bn_act import ConvBNAct
from .dwconv_bn_act import DWConvBNAct
from .fused import FusableBlock, count_fused, fused_supported, set_fused
from .squeeze_excite import SqueezeExcite, squeeze_excite_reference

__all__ = [
    "BN_EPS",
    "BN_MOMENTUM",
    "BatchNorm2d",
    "ChannelShuffle",
    "ConvBNAct",
    "DWConvBNAct",
    "FusableBlock",
    "SqueezeExcite",
    "channel_shuffle_reference",
    "count_fused",
    "fused_supported",
    "make_activation",
    "set_fused",
    "squeeze_excite_reference",
]
