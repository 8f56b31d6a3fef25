"""Building blocks shared by the zoo; the fused-capable ones switch to Triton kernels with ``fused=True``."""

from .activations import make_activation
from .channel_shuffle import ChannelShuffle, channel_shuffle_reference
from .conv_bn_act import BN_EPS, BN_MOMENTUM, ConvBNAct
from .dwconv_bn_act import DWConvBNAct
from .fused import fused_supported, set_fused
from .squeeze_excite import SqueezeExcite, squeeze_excite_reference

__all__ = [
    "BN_EPS",
    "BN_MOMENTUM",
    "ChannelShuffle",
    "ConvBNAct",
    "DWConvBNAct",
    "SqueezeExcite",
    "channel_shuffle_reference",
    "fused_supported",
    "make_activation",
    "set_fused",
    "squeeze_excite_reference",
]
