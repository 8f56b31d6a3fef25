"""Paddle's released ImageNet weights on demand: download once (resumable, with a progress bar), convert, cache,
verify. ``create_model(name, pretrained=True)`` and ``--pretrained_model=<Model>`` come through here; see
``weights`` for the cache layout and the trust-on-first-use rule."""

from .download import DownloadError
from .weights import (
    MIRROR_ENV,
    OFFLINE_ENV,
    CachePaths,
    cache_paths,
    download_url,
    model_named_by,
    released_weights,
)

__all__ = [
    "MIRROR_ENV",
    "OFFLINE_ENV",
    "CachePaths",
    "DownloadError",
    "cache_paths",
    "download_url",
    "model_named_by",
    "released_weights",
]
