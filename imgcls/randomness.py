"""Every random choice of a run, and the determinism contract that follows from how they are made.

The contract: for one ``random_seed``, the same command on the same hardware, process count and library versions
gives the same metrics, and a run resumed from a checkpoint continues exactly as the uninterrupted run would have.
That holds because no random choice depends on the order in which work happens:

- **Per-sample augmentation** (crop box, flip, rotation, color jitter) comes from a counter-based stream:
  ``sample_seed(random_seed, epoch, index)`` and the draws ``uniform(seed, draw)`` are splitmix64 hashes, not a
  stateful generator. So the reader (C++ or OpenCV), its thread count, the batch a sample lands in and the number
  of processes do not change what a sample gets. The C++ reader implements the same hash (csrc/sample_params.h).
- **Epoch order**: ``epoch_permutation(num_samples, random_seed, epoch)``, a fresh permutation per epoch.
- **Mixup**: the draw of iteration ``i`` of ``epoch`` uses ``sample_seed(random_seed ^ MIXUP_SALT, epoch, i)``;
  the salt keeps it apart from the augmentation streams.
- **Torch's own generator** (dropout and the like) is re-seeded at the start of every epoch from
  ``torch_epoch_seed(random_seed, epoch, rank)``: a stream per (epoch, rank), so ranks draw independent masks and
  an epoch does not depend on what earlier epochs consumed.
- **Model initialization**: ``seed_everything(random_seed)`` before the model is built.
- **Resume**: ``rng_states()`` / ``restore_rng_states()`` save and restore the python, numpy and torch (CPU and
  CUDA) generators with each checkpoint, for anything outside the streams above.

Kernels add one more condition. ``--deterministic`` (the default) runs under
``torch.use_deterministic_algorithms(True)`` (``imgcls.engine.deterministic_kernels``): PyTorch picks deterministic
kernels (cuDNN's, cuBLAS with a fixed workspace), and an op that has none raises, which the CLI reports as one line
suggesting ``--deterministic=False``; so a run that finishes under it was not silently nondeterministic. The fused
Triton kernels reduce without float atomics, so they are deterministic too. With ``--deterministic=False`` cuDNN
autotunes its algorithms and GPU runs may differ in the last bits. Across different hardware or library versions
the float kernels differ, and so do the metrics.
"""

from __future__ import annotations

import random

import numpy as np
import torch

MASK64 = (1 << 64) - 1
SEED_MASK = (1 << 63) - 1  # torch.manual_seed takes a non-negative 63-bit seed
MIXUP_SALT = 0x6D69787570  # "mixup"
TORCH_SALT = 0x746F726368  # "torch"


def splitmix64(x: int) -> int:
    """One splitmix64 step: a well-mixed 64-bit hash of ``x``."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def epoch_base(random_seed: int, epoch: int) -> int:
    """What every sample seed of ``epoch`` starts from."""
    return splitmix64(splitmix64(random_seed & MASK64) ^ (epoch & MASK64))


def sample_seed(random_seed: int, epoch: int, index: int) -> int:
    """The seed of one sample (or one iteration, with a salted ``random_seed``) in one epoch (64-bit)."""
    return splitmix64(epoch_base(random_seed, epoch) ^ (index & MASK64))


def splitmix64_array(x: np.ndarray) -> np.ndarray:
    """``splitmix64`` of every element of a uint64 array (numpy's uint64 arithmetic wraps as the hash needs)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_seeds(random_seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
    """``sample_seed(random_seed, epoch, i)`` for every ``i`` of a uint64 array, as a uint64 array."""
    return splitmix64_array(np.asarray(indices, dtype=np.uint64) ^ np.uint64(epoch_base(random_seed, epoch)))


def uniform(seed: int, draw: int, low: float = 0.0, high: float = 1.0) -> float:
    """Draw number ``draw`` of a sample's stream, uniform in [low, high) (53-bit resolution)."""
    u = (splitmix64(seed ^ splitmix64(draw)) >> 11) * (1.0 / (1 << 53))
    return low + (high - low) * u


def randint(seed: int, draw: int, n: int) -> int:
    """Uniform integer in [0, n) from draw number ``draw`` of a sample's stream."""
    return min(int(uniform(seed, draw) * n), n - 1)


def epoch_permutation(num_samples: int, random_seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of ``num_samples`` samples in ``epoch``."""
    return np.random.default_rng([random_seed, epoch]).permutation(num_samples)


def mixup_seed(random_seed: int, epoch: int, iteration: int) -> int:
    """The seed of the mixup draw of one training iteration."""
    return sample_seed(random_seed ^ MIXUP_SALT, epoch, iteration)


def torch_epoch_seed(random_seed: int, epoch: int, rank: int) -> int:
    """The seed torch's generator gets at the start of ``epoch`` on process ``rank``."""
    return sample_seed(random_seed ^ TORCH_SALT, epoch, rank) & SEED_MASK


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (model initialization); the streams above derive from ``seed`` themselves."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def rng_states() -> dict:
    """The python, numpy and torch (CPU and CUDA) generator states, as tensors and plain values (numpy's key
    array becomes an int64 tensor) so that a checkpoint holding them loads with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    """Put back what ``rng_states`` returned."""
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
