"""Fixtures of the reader tests: a photo-like image, every JPEG flavour of it, and those files on disk."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from .. import jpeg_corpus
from .helpers import exif_orientation_jpeg


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    return jpeg_corpus.synthetic_photo(183, 251, seed=3)  # odd sizes: partial iMCUs on both axes


@pytest.fixture(scope="session")
def variants(photo) -> dict[str, bytes]:
    return jpeg_corpus.jpeg_variants(photo)


@pytest.fixture()
def files(tmp_path, variants, photo) -> dict[str, str]:
    paths = {}
    for name, data in variants.items():
        paths[name] = tmp_path / f"{name}.jpg"
        paths[name].write_bytes(data)
    paths["png"] = tmp_path / "image.png"
    cv2.imwrite(str(paths["png"]), photo[..., ::-1])
    paths["truncated"] = tmp_path / "truncated.jpg"
    paths["truncated"].write_bytes(variants["baseline_420"][:5000])
    paths["exif6"] = tmp_path / "exif6.jpg"
    paths["exif6"].write_bytes(exif_orientation_jpeg(variants["baseline_444"], 6))
    paths["missing"] = tmp_path / "missing.jpg"
    return {k: str(v) for k, v in paths.items()}
