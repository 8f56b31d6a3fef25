"""Fetch one URL into a ``.part`` file, resumably, with a progress bar on stderr.

The caller owns the ``.part`` path and renames it once the body is complete; this module never does. A body that
ends early keeps the bytes received, and the next call asks only for the rest (HTTP ``Range``), guarded by
``If-Range`` with the validator (ETag or Last-Modified) of the first response, kept beside it as ``.part.tag``: a
server that lacks ranges, or whose file changed, answers with the whole file and the download starts over. Without a
validator there is no resume, only a clean restart. An HTTP error or an HTML page leaves nothing behind.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from .progress import Progress

CHUNK = 1 << 20
TIMEOUT_S = 60  # per socket operation, not for the whole download
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(OSError):
    """A download that failed or stopped early; the message is one line and names the URL."""


def tag_path(part: Path) -> Path:
    """Where the validator of the bytes in ``part`` is kept."""
    return part.with_name(part.name + ".tag")


def discard(part: Path) -> None:
    """Forget a partial download."""
    part.unlink(missing_ok=True)
    tag_path(part).unlink(missing_ok=True)


def download(url: str, part: Path, label: str) -> int:
    """Fetch ``url`` into ``part`` (resuming what an earlier call left there); returns the size of the complete
    file. DownloadError for HTTP errors, an unreachable host, an HTML page or a body that ends early."""
    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() and tag_path(part).is_file() else 0
    response = _open(url, part, offset)
    with response:
        if response.headers.get_content_type() == "text/html":
            discard(part)
            raise DownloadError(f"{url} sent an HTML page, not a tar archive (an error or login page?)")
        start, total = _span(response, url, offset)
        if start == 0:
            _start_over(part, response)
        return _copy_body(response, url, part, start, total, label)


def _open(url: str, part: Path, offset: int) -> http.client.HTTPResponse:
    """The response to a GET of ``url`` (for the bytes from ``offset`` on, when resuming)."""
    request = urllib.request.Request(url, headers={"User-Agent": "imgcls", "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
        request.add_header("If-Range", tag_path(part).read_text().strip())
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        e.close()
        discard(part)
        if e.code == 416 and offset:  # what we hold is no prefix of the file (or all of it): start over
            return _open(url, part, 0)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"cannot reach {url} ({reason})") from None


def _span(response: http.client.HTTPResponse, url: str, offset: int) -> tuple[int, int | None]:
    """(first byte this response carries, size of the whole file or None when unknown)."""
    length = response.headers.get("Content-Length")
    if response.status == 206:
        found = CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if found and int(found.group(1)) == offset:
            whole = found.group(3)
            return offset, int(whole) if whole != "*" else None
        raise DownloadError(f"{url}: unexpected Content-Range {response.headers.get('Content-Range')!r}")
    return 0, int(length) if length is not None and length.isdigit() else None


def _start_over(part: Path, response: http.client.HTTPResponse) -> None:
    """A whole-file response: empty ``part`` and keep its validator (none: a later call cannot resume)."""
    part.write_bytes(b"")
    validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
    if validator:
        tag_path(part).write_text(validator)
    else:
        tag_path(part).unlink(missing_ok=True)


def _copy_body(
    response: http.client.HTTPResponse, url: str, part: Path, start: int, total: int | None, label: str
) -> int:
    """Append the body to ``part`` (which holds ``start`` bytes) with a progress bar; returns the size reached."""
    progress = Progress(label, total, start)
    done = start
    try:
        with open(part, "r+b") as f:
            f.seek(start)
            f.truncate()
            while chunk := response.read(CHUNK):
                f.write(chunk)
                done += len(chunk)
                progress.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    except (OSError, http.client.HTTPException) as e:  # reset, timeout, broken chunked encoding
        progress.close(ok=False)
        raise DownloadError(f"{url}: the connection broke after {done} bytes ({e}); run again to resume") from None
    if total is not None and done != total:
        progress.close(ok=False)
        raise DownloadError(f"{url}: the body ended after {done} of {total} bytes; run again to resume")
    progress.close(ok=True)
    return done
