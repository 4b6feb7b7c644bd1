"""Downloading data files: streamed, verified before use, put in place atomically.

:func:`fetch_files` downloads named files from a base URL into a directory. Each file is
streamed into a temporary file in the target directory, checked by a caller-supplied
``verify`` function (for the IDX data sets: header and SHA-256 of the decompressed bytes, see
:mod:`tightlip.data.idx`), and only then renamed over the final name with :func:`os.replace`,
which is atomic on POSIX file systems. So the target directory never holds a partial or
unverified file under a final name, and a bad download never replaces anything.

A file that is already present is verified first: a valid one is kept (re-downloaded only
with ``force``, and then replaced only by a verified copy); an invalid one is downloaded again,
and the replacement is reported through ``report``, never done silently.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm.auto import tqdm

from tightlip.errors import DatasetError

__all__ = ["as_base_url", "download", "fetch_files"]

_CHUNK = 1 << 20

Verify = Callable[[Path, str, bool], object]
"""``verify(path, name, cached)`` raises :class:`DatasetError` unless ``path`` is a good copy
of the file called ``name``; ``cached=False`` for temporary files (do not cache their decoding)."""

Report = Callable[[str], object]


def as_base_url(url: str) -> str:
    """A base URL ending in ``/``; a plain local directory path becomes a ``file://`` URL."""
    if not urllib.parse.urlparse(url).scheme and Path(url).expanduser().is_dir():
        url = Path(url).expanduser().resolve().as_uri()
    return url if url.endswith("/") else url + "/"


def download(url: str, target: Path, timeout: float, progress: bool) -> Path:
    """Stream ``url`` into a temporary file beside ``target``; return the temporary path.

    The temporary file is flushed and ``fsync``-ed before returning, and removed on any error.

    Raises:
        DatasetError: the URL is malformed, unreachable, or answers with an HTTP error.
    """
    handle, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".part", dir=target.parent
    )
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=target.name,
                disable=None if progress else True,
                leave=False,
            ) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        tmp.chmod(0o644)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, urllib.error.URLError | OSError | ValueError):
            is_http = isinstance(exc, urllib.error.HTTPError)
            reason = exc if is_http else getattr(exc, "reason", exc)
            raise DatasetError(f"{target.name}: download from {url} failed: {reason}") from exc
        raise
    return tmp


def fetch_files(
    dest: str | Path,
    url: str,
    names: Iterable[str],
    verify: Verify,
    force: bool = False,
    timeout: float = 60,
    progress: bool = True,
    report: Report | None = None,
) -> list[Path]:
    """Download each of ``names`` from the base ``url`` into ``dest``, verified, atomically.

    ``url`` is a base URL to which the (quoted) file names are appended (``https://``,
    ``http://``, ``file://``; a local directory path is accepted too). ``report``, if given,
    receives one line per file that was replaced or kept.

    Returns:
        The final paths, in the order of ``names``.

    Raises:
        DatasetError: ``dest`` cannot be created, a download failed, or a downloaded file failed
            ``verify`` (it is removed; whatever was at the final name stays untouched).
    """
    directory = Path(dest).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create the data directory {directory}: {exc}") from exc
    base = as_base_url(url)
    paths: list[Path] = []
    for name in names:
        target = directory / name
        problem: DatasetError | None = None
        if target.exists():
            try:
                verify(target, name, True)
            except DatasetError as exc:
                problem = exc
            else:
                if not force:
                    _say(report, f"kept {target} (already present and valid)")
                    paths.append(target)
                    continue
        source = base + urllib.parse.quote(name)
        tmp = download(source, target, timeout, progress)
        try:
            verify(tmp, name, False)
        except DatasetError as exc:
            tmp.unlink(missing_ok=True)
            raise DatasetError(
                f"{name}: the file downloaded from {source} failed verification and was "
                f"removed: {exc}"
            ) from exc
        os.replace(tmp, target)
        if problem is not None:
            _say(report, f"replaced {target}: the file there was invalid ({problem})")
        paths.append(target)
    return paths


def _say(report: Report | None, line: str) -> None:
    if report is not None:
        report(line)
