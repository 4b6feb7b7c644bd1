"""MNIST (and any other IDX-format data set): finding it, checking it, loading it, fetching it.

MNIST is read from the four IDX files ``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``.
The directory is chosen by :func:`resolve_data_dir`: an explicit ``--data DIR``, then
``$TIGHTLIP_DATA``, then ``shared/datasets/mnist`` beside the repository.

Every file is checked before use:

* it must be gzip data when its name ends in ``.gz`` (uncompressed copies without ``.gz`` are
  accepted too);
* the IDX header must be well formed: magic ``0x0000TTDD`` (``TT`` the element type, ``DD`` the
  number of dimensions), and the dimensions must account for exactly the bytes that follow;
* for MNIST, the magic must be 2051 (images, ``N × 28 × 28``) or 2049 (labels, ``N``), and image
  and label counts must agree;
* by default, the SHA-256 of the *decompressed* bytes must equal the pinned value below. Hashing
  the decompressed bytes, not the ``.gz`` file, accepts any gzip re-compression of the canonical
  data while still catching a single flipped pixel.

Anything wrong raises :class:`DatasetError` naming the file, the directory it was looked for in,
and what was wrong. Decoded arrays are cached in memory per file (keyed on path, size and
modification time), so repeated loads cost only the conversion to ``float32``.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from tightlip.errors import DatasetError, DatasetNotFoundError

__all__ = [
    "DEFAULT_MNIST_URL",
    "ENV_VAR",
    "IDX_LABELS_MAGIC",
    "IDX_IMAGES_MAGIC",
    "MNIST_FILES",
    "MNIST_SHA256",
    "DatasetError",
    "DatasetNotFoundError",
    "MnistData",
    "Split",
    "default_data_dirs",
    "fetch_mnist",
    "load_idx",
    "load_mnist",
    "load_mnist_splits",
    "resolve_data_dir",
    "stratified_subset",
]

Split = Literal["train", "test"]

ENV_VAR = "TIGHTLIP_DATA"
"""Environment variable naming the MNIST directory (used when no ``--data DIR`` is given)."""

FETCH_HINT = (
    "run `tightlip data fetch mnist` to download it, or point --data DIR / $TIGHTLIP_DATA at a copy"
)

DEFAULT_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
"""A public mirror of the original gzip files (any mirror works: checksums are of the content)."""

MNIST_FILES: dict[Split, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
"""``split → (images file, labels file)``."""

MNIST_SHA256: dict[str, str] = {
    # SHA-256 of the *decompressed* IDX bytes (MD5 prefixes 6bbc9ace, a25bea73, 2646ac64,
    # 27ae3e4e, i.e. the canonical files published by LeCun, Cortes and Burges).
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
MNIST_IMAGE_SHAPE = (28, 28)

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
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------
# Where the data lives
# --------------------------------------------------------------------------------------------


def default_data_dirs(repo_root: Path | None = None, cwd: Path | None = None) -> list[Path]:
    """The fallback MNIST directories, in search order, without duplicates.

    ``<repository root>/../shared/datasets/mnist`` (the root found from this file's location),
    then ``<cwd>/../shared/datasets/mnist``.
    """
    root = Path(__file__).resolve().parents[2] if repo_root is None else Path(repo_root)
    here = Path.cwd() if cwd is None else Path(cwd)
    candidates: list[Path] = []
    for base in (root, here):
        candidate = (base / ".." / "shared" / "datasets" / "mnist").resolve()
        if candidate not in candidates:
            candidates.append(candidate)
    return candidates


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The directory to read MNIST from.

    Order: ``data_dir`` (the ``--data DIR`` argument), then ``$TIGHTLIP_DATA``, then
    :func:`default_data_dirs`. A location the user named explicitly (argument or environment
    variable) is never silently skipped: if it does not exist that is an error, rather than a
    fall-back to some other copy. Among the defaults the first existing directory wins.

    Raises:
        DatasetNotFoundError: no candidate exists; the message lists every place looked.
    """
    if data_dir is not None and str(data_dir) != "":
        path = Path(data_dir).expanduser()
        if path.is_dir():
            return path.resolve()
        raise DatasetNotFoundError(
            f"data directory {path} (given with --data) does not exist or is not a directory; "
            f"{FETCH_HINT}"
        )
    env_value = os.environ.get(ENV_VAR, "").strip()
    if env_value:
        path = Path(env_value).expanduser()
        if path.is_dir():
            return path.resolve()
        raise DatasetNotFoundError(
            f"data directory {path} (from ${ENV_VAR}) does not exist or is not a directory; "
            f"{FETCH_HINT}"
        )
    looked = default_data_dirs()
    for candidate in looked:
        if candidate.is_dir():
            return candidate
    places = "\n".join(f"  - {p}" for p in looked)
    raise DatasetNotFoundError(
        f"no MNIST directory found. Looked in (no --data DIR given, ${ENV_VAR} unset):\n"
        f"{places}\n"
        f"Run `tightlip data fetch mnist` to download MNIST, or pass --data DIR / set ${ENV_VAR}."
    )


# --------------------------------------------------------------------------------------------
# IDX decoding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _IdxRecord:
    """One decoded IDX file: a read-only array, its magic number and its content hash."""

    array: np.ndarray
    magic: int
    sha256: str


def _problem(path: Path, what: str) -> DatasetError:
    """A :class:`DatasetError` naming the file, the directory it was looked for in, and ``what``."""
    return DatasetError(f"{path.name}: {what} (file {path}, looked for in {path.parent})")


def _read_decompressed(path: Path, gz: bool | None = None) -> bytes:
    """The file's bytes, gunzipped when it is gzip data.

    ``gz=True`` requires gzip data; ``None`` decides from the name (``*.gz`` must be gzip) and
    also gunzips other files that start with the gzip magic.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetNotFoundError(
            f"{path.name}: file not found (looked for {path} in {path.parent}); {FETCH_HINT}"
        ) from exc
    except OSError as exc:
        raise _problem(path, f"cannot be read: {exc}") from exc
    if gz is None:
        gz = path.suffix == ".gz"
    if gz or raw[:2] == _GZIP_MAGIC:
        if raw[:2] != _GZIP_MAGIC:
            raise _problem(
                path,
                f"not a gzip file (starts with {raw[:8].hex(' ') or 'nothing: it is empty'}, "
                "expected 1f 8b); the download is corrupt or not the IDX data",
            )
        try:
            return gzip.decompress(raw)
        except EOFError as exc:
            raise _problem(path, f"gzip data is truncated ({exc})") from exc
        except (OSError, zlib.error) as exc:
            raise _problem(path, f"gzip data is corrupt ({exc})") from exc
    return raw


def _decode_idx(raw: bytes, path: Path, expected_magic: int | None) -> _IdxRecord:
    """Parse IDX bytes into a read-only array, checking the magic and the byte count."""
    if len(raw) < 4:
        raise _problem(
            path, f"only {len(raw)} bytes after decompression: too short for an IDX file"
        )
    (magic,) = struct.unpack(">I", raw[:4])
    if expected_magic is not None and magic != expected_magic:
        raise _problem(
            path,
            f"wrong IDX magic number {magic} (0x{magic:08x}), expected {expected_magic} "
            f"(0x{expected_magic:08x})",
        )
    type_code, ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or type_code not in _IDX_DTYPES:
        raise _problem(path, f"bad IDX magic number 0x{magic:08x}: not an IDX file")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise _problem(
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
        raise _problem(
            path,
            f"data {verdict}: the header declares {shape} = {expected_bytes} bytes of data "
            f"but {actual_bytes} follow",
        )
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=header_len).reshape(dims)
    if dtype.byteorder == ">":  # multi-byte IDX types are big-endian; convert once
        array = array.astype(dtype.newbyteorder("="))
    array.flags.writeable = False
    return _IdxRecord(array=array, magic=magic, sha256=hashlib.sha256(raw).hexdigest())


@lru_cache(maxsize=16)
def _cached_idx(path: str, mtime_ns: int, size: int, expected_magic: int | None) -> _IdxRecord:
    """Decode one file; cached on (path, modification time, size) so edits invalidate it."""
    del mtime_ns, size  # only part of the cache key
    file = Path(path)
    return _decode_idx(_read_decompressed(file), file, expected_magic)


def _read_idx(path: Path, expected_magic: int | None = None) -> _IdxRecord:
    """The (cached) decoded record of ``path``, or a :class:`DatasetError`."""
    try:
        stat = path.stat()
    except FileNotFoundError as exc:
        raise DatasetNotFoundError(
            f"{path.name}: file not found (looked for {path} in {path.parent}); {FETCH_HINT}"
        ) from exc
    except OSError as exc:
        raise _problem(path, f"cannot be read: {exc}") from exc
    if not path.is_file():
        raise _problem(path, "is not a regular file")
    return _cached_idx(str(path.resolve()), stat.st_mtime_ns, stat.st_size, expected_magic)


def _check_sha256(record: _IdxRecord, path: Path, expected: str) -> None:
    """Raise unless the decompressed content hashes to ``expected``."""
    if record.sha256 != expected.strip().lower():
        raise _problem(
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
    record = _read_idx(file)
    if expected_sha256 is not None:
        _check_sha256(record, file, expected_sha256)
    return record.array


# --------------------------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------------------------


def _find_file(directory: Path, name: str) -> Path:
    """``directory/name``, or its uncompressed sibling (``name`` without ``.gz``) if only that exists."""
    path = directory / name
    if path.exists():
        return path
    plain = directory / name.removesuffix(".gz")
    if plain != path and plain.exists():
        return plain
    raise DatasetNotFoundError(
        f"{name}: file not found in {directory} (looked for {path}"
        + (f" and {plain}" if plain != path else "")
        + f"); {FETCH_HINT}"
    )


def _mnist_arrays(
    directory: Path,
    split: Split,
    verify: bool,
    checksums: Mapping[str, str | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 ``(N, 28, 28)`` images and ``(N,)`` labels of one split, fully checked."""
    if split not in MNIST_FILES:
        raise ValueError(f"unknown split {split!r}: choose 'train' or 'test'")
    sums = {**MNIST_SHA256, **(checksums or {})}
    image_name, label_name = MNIST_FILES[split]
    image_path = _find_file(directory, image_name)
    label_path = _find_file(directory, label_name)

    images = _read_idx(image_path, IDX_IMAGES_MAGIC)
    if images.array.ndim != 3 or images.array.shape[1:] != MNIST_IMAGE_SHAPE:
        raise _problem(
            image_path,
            f"images have shape {images.array.shape}, expected (N, 28, 28)",
        )
    labels = _read_idx(label_path, IDX_LABELS_MAGIC)
    if verify:
        for record, path, name in (
            (images, image_path, image_name),
            (labels, label_path, label_name),
        ):
            expected = sums.get(name)
            if expected is not None:
                _check_sha256(record, path, expected)
    if images.array.shape[0] != labels.array.shape[0]:
        raise DatasetError(
            f"{image_path.name} holds {images.array.shape[0]} images but {label_path.name} holds "
            f"{labels.array.shape[0]} labels (in {directory}); the two files do not belong together"
        )
    return images.array, labels.array


def load_mnist(
    data_dir: str | Path | None = None,
    split: Split = "train",
    limit: int | None = None,
    verify: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One MNIST split as ``(images, labels)``.

    ``images`` is ``float32`` of shape ``(N, 784)`` with pixels scaled to ``[0, 1]`` (divided by
    255); ``labels`` is ``int64`` of shape ``(N,)``. ``limit`` keeps the first ``limit``
    examples (see :func:`load_mnist_splits` for a stratified random subset). ``verify=False``
    skips the checksum (the structure is still checked), e.g. for Fashion-MNIST or your own data
    in the same IDX layout. The returned tensors are fresh copies, safe to modify.

    Raises:
        DatasetError: missing or corrupt files; the message names the file and the directory.
        ValueError: unknown ``split`` or a negative ``limit``.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be non-negative, got {limit}")
    directory = resolve_data_dir(data_dir)
    images, labels = _mnist_arrays(directory, split, verify)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return _to_tensors(images, labels)


def _to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh ``float32 (N, 784)`` pixels in ``[0, 1]`` and ``int64 (N,)`` labels."""
    pixels = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))  # cache is read-only
    x = pixels.reshape(pixels.shape[0], -1).to(torch.float32).div_(255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def stratified_subset(labels: torch.Tensor | np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a deterministic, class-stratified random subset of size ``limit``.

    Each class gets ``limit · (its share)`` examples, rounded by largest remainder so the total
    is exactly ``limit``; within a class the examples are drawn without replacement by a
    generator seeded with ``seed``. ``limit ≥ len(labels)`` returns every index.
    """
    y = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    n = int(y.shape[0])
    if limit < 0:
        raise ValueError(f"limit must be non-negative, got {limit}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * (limit / n)
    quota = np.floor(exact).astype(np.int64)
    leftover = limit - int(quota.sum())
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[:leftover]] += 1
    picks = [
        rng.choice(np.flatnonzero(y == c), size=int(q), replace=False)
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picks)) if picks else np.arange(0)


@dataclass
class MnistData:
    """Train and test splits: ``*_x`` float32 ``(N, 784)`` in ``[0, 1]``, ``*_y`` int64 ``(N,)``."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    data_dir: Path | None = None

    @property
    def input_dim(self) -> int:
        """Number of input features (784 for MNIST)."""
        return int(self.train_x.shape[1])

    @property
    def num_classes(self) -> int:
        """Number of classes (10 for MNIST)."""
        return 10

    def __repr__(self) -> str:
        return (
            f"MnistData(train={tuple(self.train_x.shape)}, test={tuple(self.test_x.shape)}, "
            f"data_dir={self.data_dir})"
        )


def load_mnist_splits(
    data_dir: str | Path | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
    verify: bool = True,
) -> MnistData:
    """Both MNIST splits; limits take a deterministic class-stratified subset (``--quick``).

    The subsets depend only on ``seed`` and the limits (see :func:`stratified_subset`); the
    train and test subsets use independent streams derived from ``seed``. Examples keep their
    original order.
    """
    directory = resolve_data_dir(data_dir)
    limits: dict[Split, int | None] = {"train": train_limit, "test": test_limit}
    splits: list[torch.Tensor] = []
    for stream, (split, limit) in enumerate(limits.items()):
        images, labels = _mnist_arrays(directory, split, verify)
        if limit is not None:
            index = stratified_subset(labels, limit, seed=2 * seed + stream)
            images, labels = images[index], labels[index]
        splits += _to_tensors(images, labels)
    return MnistData(*splits, data_dir=directory)


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------


def _as_base_url(url: str) -> str:
    """A base URL ending in ``/``; a plain local directory path becomes a ``file://`` URL."""
    if not urllib.parse.urlparse(url).scheme and Path(url).expanduser().is_dir():
        url = Path(url).expanduser().resolve().as_uri()
    return url if url.endswith("/") else url + "/"


def _verify_file(
    path: Path, name: str, expected_sha256: str | None, cached: bool = True
) -> _IdxRecord:
    """Structural and checksum check of one MNIST file (``name`` says which one it is).

    ``cached=False`` decodes without touching the cache (for temporary download files).
    """
    magic = IDX_IMAGES_MAGIC if "images" in name else IDX_LABELS_MAGIC
    if cached:
        record = _read_idx(path, magic)
    else:
        record = _decode_idx(_read_decompressed(path, gz=name.endswith(".gz")), path, magic)
    if magic == IDX_IMAGES_MAGIC and record.array.shape[1:] != MNIST_IMAGE_SHAPE:
        raise _problem(path, f"images have shape {record.array.shape}, expected (N, 28, 28)")
    if expected_sha256 is not None:
        _check_sha256(record, path, expected_sha256)
    return record


def _download(url: str, target: Path, timeout: float, progress: bool) -> Path:
    """Stream ``url`` into a temporary file beside ``target``; return the temporary path."""
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


def fetch_mnist(
    dest: str | Path,
    url: str = DEFAULT_MNIST_URL,
    force: bool = False,
    timeout: float = 60,
    checksums: Mapping[str, str | None] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Download the four MNIST files from the base ``url`` into ``dest`` and verify them.

    ``url`` is a base URL to which the file names are appended (``https://``, ``http://``,
    ``file://``; a local directory path is accepted too). Each file is streamed into a temporary
    file in ``dest``, checked (IDX header and SHA-256 of the decompressed bytes) and only then
    renamed over the final name, so ``dest`` never holds a partial or bad file. Files already
    present and valid are kept unless ``force``; invalid ones are downloaded again.
    ``checksums`` overrides the pinned SHA-256 per file name (``None`` skips that check), e.g.
    for tests or a private mirror.

    Returns:
        The paths of the four files, train images and labels first.

    Raises:
        DatasetError: a download failed or a file is corrupt (the bad download is removed).
    """
    directory = Path(dest).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create the data directory {directory}: {exc}") from exc
    sums = {**MNIST_SHA256, **(checksums or {})}
    base = _as_base_url(url)
    paths: list[Path] = []
    counts: dict[str, int] = {}
    for split, names in MNIST_FILES.items():
        for name in names:
            target = directory / name
            expected = sums.get(name)
            record: _IdxRecord | None = None
            if target.exists() and not force:
                try:
                    record = _verify_file(target, name, expected)
                except DatasetError:
                    record = None  # present but bad: download again
            if record is None:
                source = base + urllib.parse.quote(name)
                tmp = _download(source, target, timeout, progress)
                try:
                    record = _verify_file(tmp, name, expected, cached=False)
                except DatasetError as exc:
                    tmp.unlink(missing_ok=True)
                    raise DatasetError(
                        f"{name}: the file downloaded from {source} failed verification and was "
                        f"removed: {exc}"
                    ) from exc
                os.replace(tmp, target)
            key = f"{split} {'images' if 'images' in name else 'labels'}"
            counts[key] = int(record.array.shape[0])
            paths.append(target)
        n_images, n_labels = counts[f"{split} images"], counts[f"{split} labels"]
        if n_images != n_labels:
            raise DatasetError(
                f"{names[0]} holds {n_images} images but {names[1]} holds {n_labels} labels "
                f"(in {directory}); the two files do not belong together"
            )
    return paths
