"""The IDX file format: decoding with structural and checksum checks.

IDX is the format of the MNIST files published by LeCun, Cortes and Burges ("The MNIST database
of handwritten digits", http://yann.lecun.com/exdb/mnist/), also used by Fashion-MNIST
(Xiao, Rasul and Vollgraf, 2017, arXiv:1708.07747). A file is

* a 4-byte big-endian magic ``0x0000TTDD``: two zero bytes, ``TT`` the element type
  (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32,
  ``0x0E`` float64) and ``DD`` the number of dimensions;
* ``DD`` big-endian uint32 sizes ``d_1, …, d_DD``;
* exactly ``d_1 · … · d_DD`` elements, big-endian, in C (row-major) order.

Every file is checked before use: it must be gzip data when its name ends in ``.gz``
(uncompressed copies are accepted too), the header must be well formed, and the dimensions
must account for exactly the bytes that follow. A checksum, when asked for, is the SHA-256 of
the *decompressed* bytes: this accepts any gzip re-compression of the canonical data while
still catching a single flipped pixel.

Anything wrong raises :class:`~tightlip.errors.DatasetError` naming the file, the directory
it was looked for in, and what was wrong. Decoded arrays are cached in memory per file (keyed
on path, size and modification time), so repeated loads cost only the later conversions.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from tightlip.errors import DatasetError, DatasetNotFoundError

__all__ = [
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "IdxRecord",
    "check_sha256",
    "decode_idx",
    "file_problem",
    "load_idx",
    "read_decompressed",
    "read_idx",
]

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

# IDX element type code → big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, eq=False)
class IdxRecord:
    """One decoded IDX file: a read-only array, its magic number and its content hash."""

    array: np.ndarray
    magic: int
    sha256: str


def file_problem(path: Path, what: str) -> DatasetError:
    """A :class:`DatasetError` naming the file, the directory it was looked for in, and ``what``."""
    return DatasetError(f"{path.name}: {what} (file {path}, looked for in {path.parent})")


def read_decompressed(path: Path, gz: bool | None = None) -> bytes:
    """The file's bytes, gunzipped when it is gzip data.

    ``gz=True`` requires gzip data; ``None`` decides from the name (``*.gz`` must be gzip) and
    also gunzips other files that start with the gzip magic ``1f 8b``.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if gz is None:
        gz = path.suffix == ".gz"
    if gz or raw[:2] == _GZIP_MAGIC:
        if raw[:2] != _GZIP_MAGIC:
            raise file_problem(
                path,
                f"not a gzip file (starts with {raw[:8].hex(' ') or 'nothing: it is empty'}, "
                "expected 1f 8b); the download is corrupt or not the IDX data",
            )
        try:
            return gzip.decompress(raw)
        except EOFError as exc:
            raise file_problem(path, f"gzip data is truncated ({exc})") from exc
        except (OSError, zlib.error) as exc:
            raise file_problem(path, f"gzip data is corrupt ({exc})") from exc
    return raw


def decode_idx(raw: bytes, path: Path, expected_magic: int | None) -> IdxRecord:
    """Parse IDX bytes into a read-only array, checking the magic and the byte count.

    ``path`` is only used in error messages.
    """
    if len(raw) < 4:
        raise file_problem(
            path, f"only {len(raw)} bytes after decompression: too short for an IDX file"
        )
    (magic,) = struct.unpack(">I", raw[:4])
    if expected_magic is not None and magic != expected_magic:
        raise file_problem(
            path,
            f"wrong IDX magic number {magic} (0x{magic:08x}), expected {expected_magic} "
            f"(0x{expected_magic:08x})",
        )
    type_code, ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or type_code not in _IDX_DTYPES:
        raise file_problem(path, f"bad IDX magic number 0x{magic:08x}: not an IDX file")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise file_problem(
            path, f"IDX header truncated: {ndim} dimensions need {header_len} bytes, got {len(raw)}"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    count = math.prod(dims)
    expected_bytes = count * dtype.itemsize
    actual_bytes = len(raw) - header_len
    if actual_bytes != expected_bytes:
        shape = " × ".join(str(d) for d in dims)
        verdict = "truncated" if actual_bytes < expected_bytes else "has trailing bytes"
        raise file_problem(
            path,
            f"data {verdict}: the header declares {shape} = {expected_bytes} bytes of data "
            f"but {actual_bytes} follow",
        )
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=header_len).reshape(dims)
    if dtype.byteorder == ">":  # multi-byte IDX types are big-endian; convert once
        array = array.astype(dtype.newbyteorder("="))
    array.flags.writeable = False
    return IdxRecord(array=array, magic=magic, sha256=hashlib.sha256(raw).hexdigest())


@lru_cache(maxsize=16)
def _cached_idx(path: str, mtime_ns: int, size: int, expected_magic: int | None) -> IdxRecord:
    """Decode one file; cached on (path, modification time, size) so edits invalidate it."""
    del mtime_ns, size  # only part of the cache key
    file = Path(path)
    return decode_idx(read_decompressed(file), file, expected_magic)


def read_idx(path: Path, expected_magic: int | None = None) -> IdxRecord:
    """The (cached) decoded record of ``path``, or a :class:`DatasetError`."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if not path.is_file():
        raise file_problem(path, "is not a regular file")
    return _cached_idx(str(path.resolve()), stat.st_mtime_ns, stat.st_size, expected_magic)


def check_sha256(record: IdxRecord, path: Path, expected: str) -> None:
    """Raise unless the decompressed content hashes to ``expected``."""
    if record.sha256 != expected.strip().lower():
        raise file_problem(
            path,
            f"checksum mismatch: SHA-256 of the decompressed data is {record.sha256}, expected "
            f"{expected}. The file is corrupt or is not the canonical data set "
            "(use verify=False only for your own IDX files)",
        )


def load_idx(path: str | Path, expected_sha256: str | None = None) -> np.ndarray:
    """Read any IDX file (gzip-compressed or not) into a numpy array of its declared shape.

    The element type comes from the header (``uint8``, ``int8``, ``int16``, ``int32``,
    ``float32``, ``float64``; multi-byte types are converted to native byte order). The result
    is cached and **read-only**: copy it before modifying. If ``expected_sha256`` is given, the
    SHA-256 of the decompressed bytes must match it.

    Raises:
        DatasetError: the file is missing, not gzip when named ``.gz``, truncated, has a bad
            header, or fails the checksum; the message names the file.
    """
    file = Path(path).expanduser()
    record = read_idx(file)
    if expected_sha256 is not None:
        check_sha256(record, file, expected_sha256)
    return record.array


def _unreadable(path: Path, error: OSError) -> DatasetError:
    """The one-line error for a file that is missing or cannot be read."""
    if isinstance(error, FileNotFoundError):
        return DatasetNotFoundError(
            f"{path.name}: file not found (looked for {path} in {path.parent})"
        )
    return file_problem(path, f"cannot be read: {error}")
