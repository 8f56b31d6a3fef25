"""Every kind of JPEG the native reader must handle, plus realistic synthetic photos.

Shared by the fuzz seeds (``python -m tests.jpeg_corpus OUT_DIR``, run from the repo root), tests/reader/ and
bench/bench_reader.py.
The photos are synthetic (no photo ships with the installed packages here): luminance and chroma fields with the
1/f^beta spectrum of natural images, plus hard-edged shapes for the edges and flat areas real photos have.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np


def synthetic_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 HxWx3 RGB with photo-like statistics (smooth chroma, 1/f luminance texture, sharp edges)."""
    rng = np.random.default_rng(seed)

    def field(beta: float, std: float) -> np.ndarray:
        spectrum = np.fft.rfft2(rng.standard_normal((height, width)))
        fy = np.fft.fftfreq(height)[:, None]
        fx = np.fft.rfftfreq(width)[None, :]
        radius = np.maximum(np.sqrt(fx * fx + fy * fy), 1.0 / max(height, width))
        x = np.fft.irfft2(spectrum / radius**beta, s=(height, width))
        return (x - x.mean()) / (x.std() + 1e-9) * std

    luma = field(1.5, 45.0) + 118.0
    cb, cr = field(2.0, 22.0), field(2.0, 22.0)
    rgb = np.stack([luma + 1.402 * cr, luma - 0.344 * cb - 0.714 * cr, luma + 1.772 * cb], axis=-1)
    for _ in range(12):  # objects: flat-ish colored ellipses and boxes with a little texture of their own
        color = rng.uniform(20, 235, 3)
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(width // 20, width // 4)), int(rng.integers(height // 20, height // 4)))
        mask = np.zeros((height, width), np.uint8)
        if rng.random() < 0.5:
            cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(mask, center, (center[0] + axes[0], center[1] + axes[1]), 1, -1)
        texture = field(1.8, 8.0)[..., None]
        rgb = np.where(mask[..., None] > 0, color + texture, rgb)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def jpeg_variants(rgb: np.ndarray) -> dict[str, bytes]:
    """One JPEG per flavour: subsamplings, progressive, arithmetic, restart markers, gray, CMYK, YCCK, junk.

    Encoded by the native module (libjpeg-turbo's encoder, which has every option OpenCV lacks).
    """
    from imgcls import _reader

    enc = _reader.encode
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    cmyk = 255 - np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 40, np.uint8)], axis=-1)  # Adobe-style
    out = {f"baseline_{s}": enc(rgb, 90, s) for s in ("444", "422", "420", "440", "411")}
    out["progressive_420"] = enc(rgb, 85, "420", progressive=True)
    out["progressive_444"] = enc(rgb, 85, "444", progressive=True)
    out["arithmetic_420"] = enc(rgb, 90, "420", arithmetic=True)
    out["arithmetic_progressive"] = enc(rgb, 90, "444", progressive=True, arithmetic=True)
    out["restart_420"] = enc(rgb, 90, "420", restart_rows=1)
    out["gray"] = enc(gray, 90)
    out["cmyk"] = enc(cmyk, 95, "444")
    out["ycck"] = enc(cmyk, 95, "444", ycck=True)
    base = out["baseline_420"]
    # Junk: bytes between markers (a warning, not an error) and trailing garbage after the end marker.
    out["junk_between_markers"] = base[:2] + b"\x00\x13\x37" + base[2:]
    out["trailing_junk"] = base + b"\x00junk" * 10
    return out


def write_seeds(directory: Path) -> list[Path]:
    """Small JPEG variants (fast to fuzz) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in jpeg_variants(synthetic_photo(40, 48, seed=1)).items():
        path = directory / f"{name}.jpg"
        path.write_bytes(data)
        paths.append(path)
    return paths


if __name__ == "__main__":
    print(f"jpeg_corpus: {len(write_seeds(Path(sys.argv[1])))} seeds in {sys.argv[1]}")
