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


def textured_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A harder photo: ``synthetic_photo`` under fine texture (foliage, fabric: a flat 1/f^0.5 spectrum up to the
    pixel scale) and hard-edged fine patterns (stripes 2-6 px wide, checkerboards, one-pixel lines like text or
    fences), the content where a decoder's low-pass and cv2's bilinear decimation disagree most."""
    rng = np.random.default_rng(seed + 7919)
    rgb = synthetic_photo(height, width, seed).astype(np.float64)
    spectrum = np.fft.rfft2(rng.standard_normal((height, width)))
    radius = np.maximum(np.hypot(np.fft.rfftfreq(width)[None, :], np.fft.fftfreq(height)[:, None]), 1.0 / width)
    fine = np.fft.irfft2(spectrum / radius**0.5, s=(height, width))
    rgb += (fine / (fine.std() + 1e-9) * 28.0)[..., None]
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(10):
        y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
        ph, pw = int(rng.integers(height // 12, height // 3)), int(rng.integers(width // 12, width // 3))
        period = int(rng.integers(2, 7))
        angle = rng.uniform(0, np.pi)
        kind = rng.integers(0, 3)
        if kind == 0:  # stripes at an angle
            pattern = (np.floor((xx * np.cos(angle) + yy * np.sin(angle)) / period) % 2) * 255.0
        elif kind == 1:  # checkerboard
            pattern = ((xx // period + yy // period) % 2) * 255.0
        else:  # sparse one-pixel lines (text strokes, fences, wires)
            pattern = np.where((xx % (3 * period) == 0) | (yy % (4 * period) == 0), 20.0, 235.0)
        box = (yy >= y0) & (yy < y0 + ph) & (xx >= x0) & (xx < x0 + pw)
        color = rng.uniform(0.3, 1.0, 3)
        rgb = np.where(box[..., None], pattern[..., None] * color, rgb)
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
