"""Checksums of data files *as published* (the bytes on disk, compressed or not).

Data sets publish checksums in two ways. MNIST's pinned values in tightlip are SHA-256 sums
of the decompressed IDX content (:func:`tightlip.data.idx.check_sha256`), which accepts any
re-compression. Other sets publish digests of the distributed files themselves: Fashion-MNIST
(MD5 of each ``.gz`` in its README; SHA-256 sums as used by common loaders), CIFAR-10 (MD5 of
``cifar-10-binary.tar.gz`` on its page). Those can only be checked against the file exactly as
distributed, which is what this module does: :func:`file_digest` streams a file through a
hash, cached on ``(path, size, modification time)`` so that a file read for two splits is
hashed once; :func:`check_file_digests` compares every pinned digest.

MD5 is broken as a defence against deliberate collisions; it is checked only because it is
the digest the data set's authors published, next to a SHA-256 sum that is the actual guard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from tightlip.errors import DatasetError, DatasetNotFoundError

__all__ = ["check_file_digests", "file_digest"]

_CHUNK = 1 << 22
ALGORITHMS = ("sha256", "md5")


@lru_cache(maxsize=32)
def _cached_digest(path: str, size: int, mtime_ns: int, algorithm: str) -> str:
    del size, mtime_ns  # only part of the cache key
    digest = hashlib.new(algorithm, usedforsecurity=algorithm != "md5")
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: Path, algorithm: str = "sha256", cached: bool = True) -> str:
    """The hex digest (``sha256`` or ``md5``) of the file's bytes as they are on disk.

    ``cached=False`` hashes without remembering the result (for temporary download files).

    Raises:
        DatasetNotFoundError: the file does not exist.
        DatasetError: it cannot be read.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown digest {algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, algorithm)
        return _cached_digest(*key) if cached else _cached_digest.__wrapped__(*key)
    except FileNotFoundError as exc:
        raise DatasetNotFoundError(f"{path.name}: file not found (looked for {path})") from exc
    except OSError as exc:
        raise DatasetError(f"{path.name}: cannot be read ({exc}; file {path})") from exc


def check_file_digests(
    path: Path, expected: Mapping[str, str | None], cached: bool = True, hint: str = ""
) -> None:
    """Raise :class:`DatasetError` unless the file's digest equals each pinned one.

    ``expected`` maps an algorithm (``sha256``, ``md5``) to its hex digest, or ``None`` to
    skip it. ``hint`` is appended to the message (what to do about a mismatch).
    """
    for algorithm, want in expected.items():
        if want is None:
            continue
        got = file_digest(path, algorithm, cached)
        if got != want.strip().lower():
            raise DatasetError(
                f"{path.name}: checksum mismatch: {algorithm.upper()} of the file is {got}, "
                f"expected {want.strip().lower()} (file {path}). The file is corrupt or is not "
                "the published data set" + (f"; {hint}" if hint else "")
            )
