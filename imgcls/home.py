"""Where imgcls keeps what it downloads or generates: ``$IMGCLS_HOME``, else ``$IMGCLS_CACHE`` (the same folder under
its older name), else ``~/.cache/imgcls``. The built-in dataset lives at its top (``shapes10-v2/``), Paddle's
released weights under ``weights/``."""

from __future__ import annotations

import os
from pathlib import Path


def imgcls_home() -> Path:
    """The cache folder (not created here)."""
    chosen = os.environ.get("IMGCLS_HOME") or os.environ.get("IMGCLS_CACHE")
    return Path(chosen).expanduser() if chosen else Path.home() / ".cache" / "imgcls"


def weights_dir() -> Path:
    """Where converted released weights, their records and hand-downloaded tars live."""
    return imgcls_home() / "weights"
