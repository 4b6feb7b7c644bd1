"""CIFAR-10 from its *binary* distribution, ``cifar-10-binary.tar.gz``.

CIFAR-10 (Krizhevsky, "Learning multiple layers of features from tiny images", tech. report,
University of Toronto, 2009; https://www.cs.toronto.edu/~kriz/cifar.html) is distributed in
three versions. The Python version is a set of pickles, and unpickling runs code chosen by
whoever made the file: tightlip never loads it. The binary version ("suitable for C
programs") is read here. Its archive holds ``cifar-10-batches-bin/data_batch_{1..5}.bin``
(training, 10 000 images each) and ``test_batch.bin``; each file is a sequence of records of
``1 + 3072`` bytes: the label (0–9), then the 1024 red, 1024 green and 1024 blue pixel values
of a 32 × 32 image, each plane in row-major order. So a record's pixels are already the image
in channels-first layout ``(3, 32, 32)``.

Checks. The archive's SHA-256 and the MD5 published on the CIFAR page are pinned (both of the
``.tar.gz`` as distributed); the archive is read in memory, member by member, without
extracting anything to disk, and only the six expected regular-file members are read. Every
batch must be a whole number of records with labels in 0–9 (the published split sizes,
50 000 and 10 000, follow from the checksums). A directory holding the extracted batches
(``cifar-10-batches-bin/*.bin``, or the ``.bin`` files themselves) is read too, but the pinned
checksums are of the archive, so it needs ``--no-verify``; a directory holding only the
Python version is refused with what to download instead.
"""

from __future__ import annotations

import tarfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from tightlip.data.datasets import DATASETS, Checksums, Dataset, DatasetInfo, Split
from tightlip.data.idx import file_problem
from tightlip.data.locate import find_file
from tightlip.errors import DatasetError, DatasetNotFoundError

__all__ = [
    "CIFAR10",
    "CIFAR10_ARCHIVE",
    "CIFAR10_MD5",
    "CIFAR10_SHA256",
    "CIFAR10_URL",
    "decode_batches",
]

CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/"
#: MD5 of the archive as published on https://www.cs.toronto.edu/~kriz/cifar.html
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
#: SHA-256 of the same archive (170 052 171 bytes), as pinned by independent loaders
CIFAR10_SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"

MEMBER_DIR = "cifar-10-batches-bin"
SPLIT_MEMBERS: dict[Split, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
#: the published split sizes (implied by the pinned checksums; files made with --no-verify may
#: hold any number of records)
SPLIT_SIZES: dict[Split, int] = {"train": 50_000, "test": 10_000}
IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32
NUM_CLASSES = 10
_PYTHON_VERSION = ("cifar-10-python.tar.gz", "cifar-10-batches-py")


def decode_batches(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Records ``label byte + 3072 pixel bytes`` → read-only ``(N, 3, 32, 32)`` uint8 images
    and ``(N,)`` uint8 labels. ``where`` names the source in error messages."""
    if not raw or len(raw) % RECORD_BYTES:
        raise DatasetError(
            f"{where}: {len(raw)} bytes is not a whole number of CIFAR-10 records of "
            f"{RECORD_BYTES} bytes (1 label byte + 3072 pixel bytes)"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0]
    if int(labels.max()) >= NUM_CLASSES:
        bad = int(np.flatnonzero(labels >= NUM_CLASSES)[0])
        raise DatasetError(
            f"{where}: record {bad} has label {int(labels[bad])}, outside 0–{NUM_CLASSES - 1}: "
            "not the CIFAR-10 binary format"
        )
    images = records[:, 1:].reshape(-1, *IMAGE_SHAPE)
    return images, labels


def _read_archive_members(path: Path) -> dict[str, bytes]:
    """The expected members' bytes, read from the archive in memory (nothing is extracted)."""
    wanted = {f"{MEMBER_DIR}/{m}" for members in SPLIT_MEMBERS.values() for m in members}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            for member in archive:
                if member.name in wanted and member.isfile():
                    handle = archive.extractfile(member)
                    if handle is not None:
                        found[member.name.rpartition("/")[2]] = handle.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise file_problem(path, f"not a readable .tar.gz archive ({exc})") from exc
    return found


@lru_cache(maxsize=2)
def _cached_archive(path: str, size: int, mtime_ns: int) -> dict[str, bytes]:
    del size, mtime_ns  # only part of the cache key
    return _read_archive_members(Path(path))


def read_archive(path: Path, cached: bool = True) -> dict[str, bytes]:
    """``{member file name: bytes}`` of the batches in ``path`` (cached per file version)."""
    stat = path.stat()
    if not cached:
        return _read_archive_members(path)
    return _cached_archive(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _split_arrays(
    members: dict[str, bytes], split: Split, where: str
) -> tuple[np.ndarray, np.ndarray]:
    missing = [m for m in SPLIT_MEMBERS[split] if m not in members]
    if missing:
        raise DatasetError(
            f"{where}: lacks {', '.join(missing)} (the CIFAR-10 binary {split} batches)"
        )
    parts = [decode_batches(members[m], f"{where}: {m}") for m in SPLIT_MEMBERS[split]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


class Cifar10Binary(Dataset):
    """CIFAR-10 read from ``cifar-10-binary.tar.gz`` (module docstring)."""

    def file_path(self, directory: Path, name: str) -> Path:
        path = find_file(directory, name)
        if path is not None:
            return path
        python = [n for n in _PYTHON_VERSION if (directory / n).exists()]
        if python:
            raise DatasetNotFoundError(
                f"{directory} holds {', '.join(python)}, CIFAR-10's Python version, which is "
                f"pickled and never loaded by tightlip; download the binary version "
                f"{CIFAR10_ARCHIVE} (`tightlip data fetch cifar10 --dest {directory}`)"
            )
        return super().file_path(directory, name)

    def _extracted_dir(self, directory: Path) -> Path | None:
        for candidate in (directory / MEMBER_DIR, directory):
            if all((candidate / m).is_file() for m in SPLIT_MEMBERS["test"]):
                return candidate
        return None

    def read_split(
        self, directory: Path, split: Split, verify: bool = True, checksums: Checksums | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        self.check_split_name(split)
        extracted = None if find_file(directory, CIFAR10_ARCHIVE) else self._extracted_dir(directory)
        if extracted is not None:
            if verify:
                raise DatasetError(
                    f"{extracted} holds extracted CIFAR-10 batches, but the pinned checksums "
                    f"are those of {CIFAR10_ARCHIVE}: put the archive in {directory}, or pass "
                    "--no-verify (verify=False) to read the extracted files unchecked"
                )
            members = {
                m: (extracted / m).read_bytes()
                for m in SPLIT_MEMBERS[split]
                if (extracted / m).is_file()
            }
            return _split_arrays(members, split, str(extracted))
        path = self.file_path(directory, CIFAR10_ARCHIVE)
        if verify:
            sha256 = self.checksums(checksums).get(CIFAR10_ARCHIVE)
            self.check_published_file(path, CIFAR10_ARCHIVE, sha256)
        return _split_arrays(read_archive(path), split, str(path))

    def verify_file(
        self, path: Path, name: str, expected_sha256: str | None, cached: bool = True
    ) -> None:
        self.check_published_file(path, name, expected_sha256, cached)
        members = read_archive(path, cached)
        for split in SPLIT_MEMBERS:
            _split_arrays(members, split, str(path))


CIFAR10 = DATASETS.register(
    "cifar10",
    Cifar10Binary(
        DatasetInfo(
            name="cifar10",
            title="CIFAR-10",
            files={"train": (CIFAR10_ARCHIVE,), "test": (CIFAR10_ARCHIVE,)},
            sha256={CIFAR10_ARCHIVE: CIFAR10_SHA256},
            md5={CIFAR10_ARCHIVE: CIFAR10_MD5},
            checksum_of="file",
            input_shape=IMAGE_SHAPE,
            num_classes=NUM_CLASSES,
            url=CIFAR10_URL,
            source="Krizhevsky, Learning multiple layers of features from tiny images, 2009; "
            "https://www.cs.toronto.edu/~kriz/cifar.html (binary version)",
        )
    ),
    aliases=("cifar-10",),
)
