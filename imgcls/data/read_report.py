"""How the CLIs print what the readers report about images: names that may not be UTF-8, damaged-image summaries.

A file name on Linux is bytes; Python gives one that is not UTF-8 as a str with surrogate escapes
(``os.fsdecode(b"caf\\xe9.jpg")`` is ``'caf\\udce9.jpg'``), which a UTF-8 stdout refuses to print. ``printable``
shows those bytes as ``\\xe9`` instead, so a report line never crashes the run that prints it.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with each byte that is not UTF-8 (a surrogate escape) written as ``\\xNN``; the rest unchanged."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (not from a file name)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def warned_summary(warned: list[tuple[str, str]]) -> str:
    """One line for the images decoded in spite of damage (libjpeg warnings), with the first as an example."""
    path, warning = warned[0]
    return (
        f"decoded {len(warned)} images with libjpeg warnings (damaged data, decoded as far as it goes), "
        f"e.g. {printable(path)}: {printable(warning)}"
    )
