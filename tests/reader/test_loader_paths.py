"""The loader's two normalization paths (same-pass in the reader, uint8 + normalize on the device) give the same
batches."""

from __future__ import annotations

import pytest

from imgcls.data import transforms as T

from .helpers import FULL_AUG, spec, torch_equal

pytestmark = pytest.mark.usefixtures("needs_native")


def test_uint8_batch_normalized_on_device_equals_same_pass(files):
    """The CUDA path's logic (uint8 NHWC batches, normalized by the consumer on the device), run on the CPU, gives
    the C++ same-pass batches bit for bit: same images dropped, same order."""
    from imgcls.data.datasets import Sample
    from imgcls.data.loader import Loader

    names = ["baseline_420", "missing", "png", "progressive_420", "gray", "cmyk"] * 2
    samples = [Sample(files[n], i) for i, n in enumerate(names)]
    pre = spec(48, 56, T.AugConfig(**FULL_AUG), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    args = dict(preprocess=pre, train=True, batch_size=6, random_seed=4, num_workers=2, prefetch=1, reader="native")
    same_pass = Loader(samples, **args, device="cpu")
    on_device = Loader(samples, **args, device="cpu", normalize_on_device=True)
    assert not same_pass.normalize_on_device and on_device.normalize_on_device and not on_device.pin_memory
    for epoch in (0, 2):
        same_pass.set_epoch(epoch)
        on_device.set_epoch(epoch)
        got, want = list(on_device), list(same_pass)
        assert len(got) == len(want) == 2
        for (images, labels), (want_images, want_labels) in zip(got, want):
            assert images.is_contiguous() and torch_equal(images, want_images) and torch_equal(labels, want_labels)
        assert on_device.skipped == same_pass.skipped and len(same_pass.skipped) == 2
    same_pass.close()
    on_device.close()


def test_cuda_loader_batches_equal_cpu_batches(files):
    """On a GPU: the loader's CUDA path (uint8 to the device, normalized there) gives the CPU path's batches."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: the uint8 + normalize-on-device path is checked on CPU by the test above")
    from imgcls.data.datasets import Sample
    from imgcls.data.loader import Loader

    samples = [Sample(files[n], i) for i, n in enumerate(["baseline_420", "missing", "png", "gray", "cmyk"])]
    args = dict(train=True, batch_size=2, preprocess=spec(48, 56))
    batches = {}
    for device in ("cpu", "cuda"):
        loader = Loader(samples, **args, random_seed=3, num_workers=2, prefetch=2, device=device)
        assert loader.normalize_on_device == loader.pin_memory == (device == "cuda")
        batches[device] = list(loader)
        loader.close()
    assert len(batches["cpu"]) == len(batches["cuda"]) == 2
    for (images, labels), (gpu_images, gpu_labels) in zip(batches["cpu"], batches["cuda"]):
        assert gpu_images.is_cuda and gpu_images.dtype == torch.float32 and gpu_images.is_contiguous()
        assert torch_equal(images, gpu_images.cpu()) and torch_equal(labels, gpu_labels.cpu())
