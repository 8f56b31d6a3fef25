"""The preprocessing spec: how pixels become a model's input, saved with every checkpoint and export.

One record holds the input size, the eval resize, the interpolation, the mean/std and the training augmentation.
Training writes it into ``state.pt``; an export writes it into ``inference.json``; eval, infer and a deployed model
rebuild exactly the preprocessing a model was trained with from it (``imgcls.config.from_plain``).

Normalization is ``x * scale + shift`` per channel with ``scale = 1 / (255 std)`` and ``shift = -mean / std``, in
float32: ``normalize`` is the one Python formula (the loader's GPU path, the OpenCV reader, infer and export use
it); the C++ reader's same-pass normalize (csrc ``normalize_to_chw``) is its fast twin, equal bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .transforms import INTERPOLATIONS, AugConfig


@dataclass(frozen=True)
class PreprocessSpec:
    """Train: random-resized crop to ``input_size`` with ``aug``; eval: resize the short side to ``resize_short``,
    center crop ``input_size``. Both then normalize with ``mean``/``std`` (RGB, in 0..1 units)."""

    input_size: int
    resize_short: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    aug: AugConfig = field(default_factory=AugConfig)

    def __post_init__(self) -> None:
        if self.input_size < 1 or self.resize_short < self.input_size:
            raise ValueError(
                f"resize_short {self.resize_short} must be >= the input size {self.input_size} (and that >= 1)"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError(f"need 3 means and 3 positive stds, got mean {self.mean} std {self.std}")
        if self.aug.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.aug.interpolation!r}")

    @property
    def interpolation(self) -> str:
        return self.aug.interpolation

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 [3] tensors with ``normalized = pixel * scale + shift``, i.e. (pixel / 255 - mean) / std."""
        std = torch.tensor(self.std, dtype=torch.float32)
        return 1.0 / (255.0 * std), -torch.tensor(self.mean, dtype=torch.float32) / std


def normalize(pixels: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW ``pixel * scale + shift`` per channel, on the device ``pixels`` is on.

    Two float32 roundings (the product, then the sum), as the C++ reader's same-pass normalize:
    tests/test_reader.py checks that the two agree bit for bit.
    """
    n, h, w, _ = pixels.shape
    images = torch.empty((n, 3, h, w), dtype=torch.float32, device=pixels.device)
    images.copy_(pixels.permute(0, 3, 1, 2))
    scale, shift = scale.to(images.device).view(1, 3, 1, 1), shift.to(images.device).view(1, 3, 1, 1)
    return images.mul_(scale).add_(shift)
