"""Fashion-MNIST (IDX, checksums of the published .gz), CIFAR-10 binary and a user's .npz.

Every test builds its own small files in the format: the real data sets are not needed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tightlip.data import (
    CIFAR10,
    DATASETS,
    FASHION_MNIST,
    FILES,
    MNIST_FILES,
    DatasetError,
    DatasetNotFoundError,
    get_dataset,
)
from tightlip.data.cifar import CIFAR10_ARCHIVE, RECORD_BYTES, decode_batches
from tightlip.data.datasets import FASHION_MNIST_MD5, FASHION_MNIST_SHA256


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read or write the real user cache or $TIGHTLIP_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    monkeypatch.delenv("TIGHTLIP_DATA", raising=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------


def test_registered_datasets_and_spellings() -> None:
    assert {"mnist", "fashion-mnist", "cifar10", "files"} <= set(DATASETS.names())
    assert get_dataset("fashion_mnist") is FASHION_MNIST
    assert get_dataset("CIFAR-10") is CIFAR10
    assert get_dataset("npz") is FILES
    assert CIFAR10.info.all_files() == (CIFAR10_ARCHIVE,)  # one archive for both splits


def test_pinned_checksums_are_well_formed() -> None:
    """32 / 64 lower-case hex digits, one pair per Fashion-MNIST file."""
    names = {name for pair in MNIST_FILES.values() for name in pair}
    assert set(FASHION_MNIST_MD5) == set(FASHION_MNIST_SHA256) == names
    for digest in [*FASHION_MNIST_MD5.values(), *CIFAR10.info.md5.values()]:
        assert len(digest) == 32 and int(digest, 16) >= 0 and digest == digest.lower()
    for digest in [*FASHION_MNIST_SHA256.values(), *CIFAR10.info.sha256.values()]:
        assert len(digest) == 64 and int(digest, 16) >= 0 and digest == digest.lower()


# --------------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fashion(directory: Path, n_train: int = 9, n_test: int = 4) -> dict[str, str]:
    """Four small Fashion-MNIST-shaped .gz files; returns the SHA-256 of each file."""
    rng = np.random.default_rng(2)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = MNIST_FILES[split]  # type: ignore[index]
        data = {
            images: rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
            labels: rng.integers(0, 10, size=(n,), dtype=np.uint8),
        }
        for name, array in data.items():
            (directory / name).write_bytes(gzip.compress(idx_bytes(array), mtime=0))
    return {name: sha256(directory / name) for pair in MNIST_FILES.values() for name in pair}


def test_fashion_files_are_checked_against_the_published_digests(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    with pytest.raises(DatasetError, match="SHA256 of the file is .* expected 3aede38d"):
        FASHION_MNIST.load(tmp_path, "train")
    x, y = FASHION_MNIST.load(tmp_path, "train", verify=False)
    assert x.shape == (9, 784) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_fashion_with_matching_sha256_is_read(tmp_path: Path) -> None:
    sums = write_fashion(tmp_path)
    images, labels = FASHION_MNIST.read_split(tmp_path, "test", verify=True, checksums=sums)
    assert images.shape == (4, 28, 28) and labels.shape == (4,)


def test_fashion_md5_is_checked_with_the_pinned_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The authors' MD5 is checked too whenever the pinned SHA-256 applies."""
    sums = write_fashion(tmp_path)
    name = MNIST_FILES["test"][1]
    monkeypatch.setitem(FASHION_MNIST.info.sha256, name, sums[name])  # type: ignore[index]
    with pytest.raises(DatasetError, match=f"MD5 of the file is .* expected {FASHION_MNIST_MD5[name]}"):
        FASHION_MNIST.verify_file(tmp_path / name, name, sums[name])
    md5 = hashlib.md5(gzip.compress(b"")).hexdigest()
    assert FASHION_MNIST.file_digests(name, sums[name]) == {
        "sha256": sums[name],
        "md5": FASHION_MNIST_MD5[name],
    }
    assert FASHION_MNIST.file_digests(name, "0" * 64)["md5"] is None
    assert md5 != FASHION_MNIST_MD5[name]


def test_fashion_uncompressed_copy_needs_no_verify(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    for name in MNIST_FILES["train"]:
        gz = tmp_path / name
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    with pytest.raises(DatasetError, match="cannot be checked on an uncompressed copy.*--no-verify"):
        FASHION_MNIST.load(tmp_path, "train")
    x, _ = FASHION_MNIST.load(tmp_path, "train", verify=False)
    assert x.shape == (9, 784)


def test_fashion_fetch_verifies_each_download(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    sums = write_fashion(mirror)
    dest = tmp_path / "dest"
    paths = FASHION_MNIST.fetch(dest, str(mirror), checksums=sums, progress=False)
    assert [p.name for p in paths] == list(FASHION_MNIST.info.all_files())
    with pytest.raises(DatasetError, match="failed verification"):
        FASHION_MNIST.fetch(tmp_path / "other", str(mirror), progress=False)
    assert not any((tmp_path / "other").glob("*.gz"))


# --------------------------------------------------------------------------------------------
# CIFAR-10, binary version
# --------------------------------------------------------------------------------------------


def cifar_records(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    records = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1)
    return records.tobytes(), images, labels


def write_cifar_archive(path: Path, per_batch: int = 3, extra: dict[str, bytes] | None = None):
    """A small cifar-10-binary.tar.gz; returns the train / test images and labels written."""
    members: dict[str, bytes] = {}
    train_images, train_labels = [], []
    for i in range(1, 6):
        raw, images, labels = cifar_records(per_batch, seed=i)
        members[f"cifar-10-batches-bin/data_batch_{i}.bin"] = raw
        train_images.append(images)
        train_labels.append(labels)
    raw, test_images, test_labels = cifar_records(per_batch + 1, seed=9)
    members["cifar-10-batches-bin/test_batch.bin"] = raw
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\nautomobile\n"
    members.update(extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return (np.concatenate(train_images), np.concatenate(train_labels)), (test_images, test_labels)


def test_cifar_records_decode_to_channels_first_images() -> None:
    raw, images, labels = cifar_records(4, seed=0)
    decoded, decoded_labels = decode_batches(raw, "test")
    assert decoded.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(decoded, images)
    np.testing.assert_array_equal(decoded_labels, labels)
    # the first pixel byte after a label is the red value of the top-left pixel
    assert decoded[1, 0, 0, 0] == raw[RECORD_BYTES + 1]
    assert decoded[1, 2, 31, 31] == raw[2 * RECORD_BYTES - 1]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not a whole number"),
        (bytes(RECORD_BYTES + 5), "not a whole number"),
        (bytes([10]) + bytes(RECORD_BYTES - 1), "label 10, outside 0–9"),
    ],
)
def test_cifar_bad_records_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        decode_batches(raw, "batch")


def test_cifar_archive_is_read_and_checked(tmp_path: Path) -> None:
    (train_x, train_y), (test_x, test_y) = write_cifar_archive(tmp_path / CIFAR10_ARCHIVE)
    with pytest.raises(DatasetError, match="SHA256 of the file is .* expected c4a38c50"):
        CIFAR10.load_splits(tmp_path)
    data = CIFAR10.load_splits(tmp_path, verify=False)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert data.train_x.shape == (15, 3072) and data.test_x.shape == (4, 3072)
    assert data.dataset == "cifar10"
    expected = torch.from_numpy(train_x.reshape(15, -1).astype(np.float32) / 255)
    torch.testing.assert_close(data.train_x, expected, rtol=0, atol=0)
    assert data.train_y.tolist() == train_y.tolist() and data.test_y.tolist() == test_y.tolist()
    sums = {CIFAR10_ARCHIVE: sha256(tmp_path / CIFAR10_ARCHIVE)}
    images, _ = CIFAR10.read_split(tmp_path, "test", verify=True, checksums=sums)
    np.testing.assert_array_equal(images, test_x)


def test_cifar_missing_batch_and_garbage_archive(tmp_path: Path) -> None:
    archive = tmp_path / "a" / CIFAR10_ARCHIVE
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
        raw = cifar_records(2, 0)[0]
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    with pytest.raises(DatasetError, match="lacks data_batch_1.bin"):
        CIFAR10.load(archive.parent, "train", verify=False)
    garbage = tmp_path / "b" / CIFAR10_ARCHIVE
    garbage.parent.mkdir()
    garbage.write_bytes(b"not a tar file at all")
    with pytest.raises(DatasetError, match="not a readable .tar.gz archive"):
        CIFAR10.load(garbage.parent, "test", verify=False)


def test_cifar_extracted_batches_need_no_verify(tmp_path: Path) -> None:
    archive = tmp_path / "src" / CIFAR10_ARCHIVE
    _, (test_x, _) = write_cifar_archive(archive)
    extracted = tmp_path / "extracted"
    with tarfile.open(archive) as tar:
        tar.extractall(extracted, filter="data")
    with pytest.raises(DatasetError, match="pinned checksums are those of cifar-10-binary"):
        CIFAR10.load(extracted, "test")
    x, _ = CIFAR10.load(extracted, "test", verify=False)
    assert x.shape == (4, 3072)


def test_cifar_python_version_is_never_loaded(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x80\x04 a pickle would be here")
    with pytest.raises(DatasetNotFoundError, match="Python version, which is pickled"):
        CIFAR10.load(tmp_path, "train")


def test_cifar_fetch_from_a_mirror(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    write_cifar_archive(mirror / CIFAR10_ARCHIVE)
    sums = {CIFAR10_ARCHIVE: sha256(mirror / CIFAR10_ARCHIVE)}
    paths = CIFAR10.fetch(tmp_path / "dest", str(mirror), checksums=sums, progress=False)
    assert [p.name for p in paths] == [CIFAR10_ARCHIVE]
    with pytest.raises(DatasetError, match="failed verification"):
        CIFAR10.fetch(tmp_path / "other", str(mirror), progress=False)


# --------------------------------------------------------------------------------------------
# a user's own .npz files
# --------------------------------------------------------------------------------------------


def write_npz(directory: Path, train: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "train.npz", **train)
    np.savez(directory / "test.npz", **test)
    return directory


def images(n: int, seed: int = 0, dtype=np.uint8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 3, 4, 4), dtype=np.uint8)
    y = np.arange(n) % 3
    return {"x": x if dtype == np.uint8 else (x / 255).astype(dtype), "y": y}


def test_npz_images_and_flat_floats(tmp_path: Path) -> None:
    data = FILES.load_splits(write_npz(tmp_path / "a", images(6), images(3, 1)))
    assert data.input_shape == (3, 4, 4) and data.num_classes == 3
    assert data.train_x.shape == (6, 48) and float(data.train_x.max()) <= 1
    flat = {"x": np.linspace(0, 1, 20).reshape(5, 4), "y": np.array([0, 1, 0, 1, 1])}
    data = FILES.load_splits(write_npz(tmp_path / "b", flat, flat))
    assert data.input_shape == (4,) and data.num_classes == 2
    torch.testing.assert_close(data.test_x, torch.from_numpy(flat["x"]).float())


def test_npz_stratified_quick_subset(tmp_path: Path) -> None:
    data = FILES.load_splits(write_npz(tmp_path, images(30), images(9, 1)), train_limit=6)
    assert data.train_x.shape[0] == 6 and sorted(data.train_y.tolist()) == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"x": np.zeros((4, 3, 2)), "y": np.zeros(4, int)}, r"x has shape \(4, 3, 2\)"),
        ({"x": np.zeros((4, 3)), "y": np.zeros((4, 1), int)}, r"y has shape \(4, 1\)"),
        ({"x": np.zeros((4, 3)), "y": np.zeros(5, int)}, "x has 4 examples but y has 5"),
        ({"x": np.zeros((4, 3)), "y": np.zeros(4)}, "y must hold integer labels"),
        ({"x": np.zeros((4, 3)), "y": -np.ones(4, int)}, "negative label -1"),
        ({"x": np.zeros((4, 3), np.int64), "y": np.zeros(4, int)}, "x has dtype int64"),
        ({"x": np.full((4, 3), np.nan), "y": np.zeros(4, int)}, "12 NaN or infinite"),
        ({"x": np.full((4, 3), 2.0), "y": np.zeros(4, int)}, r"spans \[2, 2\]"),
        ({"x": np.zeros((4, 3)), "y": np.array([0, 2, 2, 0])}, "labels 1 never occur"),
        ({"x": np.zeros((4, 3))}, "needs 'y'"),
        ({"x": np.zeros((0, 3)), "y": np.zeros(0, int)}, "holds no examples"),
    ],
)
def test_npz_bad_arrays_are_one_clear_line(tmp_path: Path, train: dict, message: str) -> None:
    good = {"x": np.zeros((2, 3)), "y": np.array([0, 1])}
    with pytest.raises(DatasetError, match=message) as error:
        FILES.load_splits(write_npz(tmp_path, train, good))
    assert "\n" not in str(error.value)


def test_npz_split_mismatches(tmp_path: Path) -> None:
    train = {"x": np.zeros((4, 3)), "y": np.array([0, 1, 0, 1])}
    with pytest.raises(DatasetError, match="test.npz holds labels 5"):
        FILES.load_splits(write_npz(tmp_path / "a", train, {"x": np.zeros((1, 3)), "y": np.array([5])}))
    with pytest.raises(DatasetError, match="examples of shape"):
        FILES.load_splits(write_npz(tmp_path / "b", train, {"x": np.zeros((1, 4)), "y": np.array([0])}))


def test_npz_pickles_and_garbage_are_refused(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    objects = np.array([{"a": 1}, None], dtype=object)
    np.savez(directory / "train.npz", x=objects, y=np.array([0, 1]))
    np.savez(directory / "test.npz", x=np.zeros((1, 2)), y=np.array([0]))
    with pytest.raises(DatasetError, match="never loads pickles"):
        FILES.load_splits(directory)
    (directory / "train.npz").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="not a readable .npz file"):
        FILES.load_splits(directory)
    np.save(directory / "plain.npy", np.zeros(3))
    (directory / "plain.npy").rename(directory / "train.npz")
    with pytest.raises(DatasetError, match="single .npy array"):
        FILES.load_splits(directory)


def test_npz_missing_directory_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="train.npz: file not found"):
        FILES.load_splits(tmp_path)
    with pytest.raises(DatasetError, match="no download mirror"):
        FILES.fetch(tmp_path / "x")
