"""The loader's two normalization paths (same-pass in C++, uint8 + normalize_on_device) give the same batches."""

from __future__ import annotations

import numpy as np
import pytest

from imgcls.data import transforms as T

from .helpers import FULL_AUG, torch_equal

pytestmark = pytest.mark.usefixtures("needs_native")


def test_uint8_batch_normalized_on_device_equals_same_pass(files):
    """The CUDA path (pinned uint8 NHWC + normalize_on_device), run here on CPU, == the C++ same-pass normalize."""
    from imgcls.data.datasets import Sample
    from imgcls.data.loader import Loader, normalize_on_device

    names = ["baseline_420", "missing", "png", "progressive_420", "gray", "cmyk"]
    samples = [Sample(files[n], i) for i, n in enumerate(names)]
    args = dict(
        train=True, batch_size=6, size=48, resize_short=56, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )
    loader = Loader(
        samples,
        **args,
        aug=T.AugConfig(**FULL_AUG),
        random_seed=4,
        num_workers=2,
        prefetch=1,
        reader="native",
        device="cpu",
    )
    assert not loader.gpu_normalize  # CPU: the same-pass path
    indices = np.arange(len(samples))
    images, labels = loader.load_batch(indices, epoch=2)
    pixels, pixel_labels = loader.read_pixels(indices, epoch=2)
    assert pixels.dtype == torch_uint8() and pixels.shape == (5, 48, 48, 3)
    on_device = normalize_on_device(pixels, loader._scale, loader._shift)
    assert on_device.is_contiguous() and torch_equal(on_device, images) and torch_equal(pixel_labels, labels)
    assert [p for p, _ in loader.skipped] == [files["missing"]] * 2
    loader.close()


def torch_uint8():
    import torch

    return torch.uint8


def test_cuda_loader_batches_equal_cpu_batches(files):
    """On a GPU: the loader's CUDA path (uint8 to the device, normalized there) gives the CPU path's batches."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: the uint8 + normalize_on_device path is checked on CPU by the test above")
    from imgcls.data.datasets import Sample
    from imgcls.data.loader import Loader

    samples = [Sample(files[n], i) for i, n in enumerate(["baseline_420", "missing", "png", "gray", "cmyk"])]
    args = dict(train=True, batch_size=2, size=48, resize_short=56, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    batches = {}
    for device in ("cpu", "cuda"):
        loader = Loader(samples, **args, aug=T.AugConfig(), random_seed=3, num_workers=2, prefetch=2, device=device)
        assert loader.gpu_normalize == (device == "cuda")
        batches[device] = list(loader)
        loader.close()
    assert len(batches["cpu"]) == len(batches["cuda"]) == 2
    for (images, labels), (gpu_images, gpu_labels) in zip(batches["cpu"], batches["cuda"]):
        assert gpu_images.is_cuda and gpu_images.dtype == torch.float32 and gpu_images.is_contiguous()
        assert torch_equal(images, gpu_images.cpu()) and torch_equal(labels, gpu_labels.cpu())
