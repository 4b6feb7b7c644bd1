"""Tests for tightlip.data: IDX parsing, MNIST loading and checking, search order, fetching."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import shutil
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tightlip.data import (
    MNIST_FILES,
    DatasetError,
    DatasetNotFoundError,
    default_data_dirs,
    fetch_mnist,
    load_idx,
    load_mnist,
    load_mnist_splits,
    locate,
    resolve_data_dir,
    stratified_subset,
)

SHARED_MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "mnist"
TRAIN_IMAGES, TRAIN_LABELS = MNIST_FILES["train"]
TEST_IMAGES, TEST_LABELS = MNIST_FILES["test"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the user cache at an empty temporary directory: never read or write the real one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture
def mnist_dir() -> Path:
    """The shared MNIST directory; tests needing the real data skip when it is absent."""
    path = SHARED_MNIST.resolve()
    if not all((path / name).is_file() for pair in MNIST_FILES.values() for name in pair):
        pytest.skip(f"real MNIST not available at {path} (run `tightlip data fetch mnist`)")
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_synthetic_mnist(directory: Path, n_train: int = 7, n_test: int = 5) -> dict[str, str]:
    """Write four small MNIST-shaped .gz files; return their decompressed SHA-256 sums."""
    rng = np.random.default_rng(1)
    directory.mkdir(parents=True, exist_ok=True)
    sums: dict[str, str] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        image_name, label_name = MNIST_FILES[split]  # type: ignore[index]
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        for name, array in ((image_name, images), (label_name, labels)):
            raw = idx_bytes(array)
            (directory / name).write_bytes(gzip.compress(raw, compresslevel=1))
            sums[name] = hashlib.sha256(raw).hexdigest()
    return sums


# --------------------------------------------------------------------------------------------
# Real MNIST
# --------------------------------------------------------------------------------------------


def test_load_real_mnist(mnist_dir: Path) -> None:
    x, y = load_mnist(mnist_dir, "train")
    assert x.shape == (60000, 784) and x.dtype == torch.float32
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert set(y.unique().tolist()) == set(range(10))
    assert y[:5].tolist() == [5, 0, 4, 1, 9]

    xt, yt = load_mnist(mnist_dir, "test")
    assert xt.shape == (10000, 784) and yt.shape == (10000,)
    assert 0.0 <= float(xt.min()) and float(xt.max()) <= 1.0
    assert yt[:3].tolist() == [7, 2, 1]

    xs, ys = load_mnist(mnist_dir, "test", limit=100)
    assert xs.shape == (100, 784) and torch.equal(xs, xt[:100]) and torch.equal(ys, yt[:100])


def test_loaded_tensors_are_fresh_copies(mnist_dir: Path) -> None:
    x1, y1 = load_mnist(mnist_dir, "test", limit=10)
    x1.zero_()
    y1.fill_(3)
    x2, y2 = load_mnist(mnist_dir, "test", limit=10)
    assert float(x2.max()) > 0 and y2.tolist() != [3] * 10


def test_load_mnist_splits_quick_subset(mnist_dir: Path) -> None:
    quick = load_mnist_splits(mnist_dir, train_limit=1000, test_limit=200, seed=3)
    assert quick.train_x.shape == (1000, 784) and quick.test_x.shape == (200, 784)
    assert quick.input_dim == 784 and quick.num_classes == 10
    assert quick.data_dir == mnist_dir
    counts = torch.bincount(quick.train_y, minlength=10)
    assert counts.sum() == 1000 and int(counts.min()) >= 85  # stratified: every class ≈ 10 %
    again = load_mnist_splits(mnist_dir, train_limit=1000, test_limit=200, seed=3)
    assert torch.equal(again.train_x, quick.train_x) and torch.equal(again.test_y, quick.test_y)
    other = load_mnist_splits(mnist_dir, train_limit=1000, test_limit=200, seed=4)
    assert not torch.equal(other.train_x, quick.train_x)


def test_stratified_subset() -> None:
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    index = stratified_subset(labels, 10, seed=0)
    assert len(index) == 10 and np.all(np.diff(index) > 0)
    assert np.bincount(labels[index]).tolist() == [5, 3, 2]
    assert np.array_equal(index, stratified_subset(labels, 10, seed=0))
    assert len(stratified_subset(labels, 7, seed=1)) == 7
    assert np.array_equal(stratified_subset(labels, 1000), np.arange(100))
    with pytest.raises(ValueError):
        stratified_subset(labels, -1)


# --------------------------------------------------------------------------------------------
# Corrupt and missing files
# --------------------------------------------------------------------------------------------


@pytest.fixture
def test_split_copy(mnist_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the real test split to damage."""
    for name in MNIST_FILES["test"]:
        shutil.copy(mnist_dir / name, tmp_path / name)
    return tmp_path


def rewrite(
    path: Path, edit: Callable[[bytes], bytes] | None = None, raw: bytes | None = None
) -> None:
    """Replace a .gz file's content: ``edit`` maps decompressed bytes, or ``raw`` as is."""
    if raw is None:
        assert edit is not None
        raw = gzip.compress(edit(gzip.decompress(path.read_bytes())), compresslevel=1)
    path.write_bytes(raw)


def _set_magic(content: bytes, magic: int) -> bytes:
    return struct.pack(">I", magic) + content[4:]


def _flip_byte(content: bytes, at: int) -> bytes:
    return content[:at] + bytes([content[at] ^ 0xFF]) + content[at + 1 :]


def test_wrong_magic(test_split_copy: Path) -> None:
    path = test_split_copy / TEST_LABELS
    rewrite(path, functools.partial(_set_magic, magic=2051))  # an images magic in a label file
    with pytest.raises(DatasetError, match="magic") as info:
        load_mnist(test_split_copy, "test")
    assert TEST_LABELS in str(info.value) and str(test_split_copy) in str(info.value)


def test_truncated_data(test_split_copy: Path) -> None:
    path = test_split_copy / TEST_IMAGES
    rewrite(path, lambda content: content[:-1000])
    with pytest.raises(DatasetError, match="truncated") as info:
        load_mnist(test_split_copy, "test", verify=False)
    assert TEST_IMAGES in str(info.value)


def test_truncated_gzip(test_split_copy: Path) -> None:
    path = test_split_copy / TEST_IMAGES
    rewrite(path, raw=path.read_bytes()[:5000])
    with pytest.raises(DatasetError, match="truncated") as info:
        load_mnist(test_split_copy, "test")
    assert TEST_IMAGES in str(info.value)


def test_garbage_not_gzip(test_split_copy: Path) -> None:
    rewrite(test_split_copy / TEST_LABELS, raw=b"<html>404 not found</html>")
    with pytest.raises(DatasetError, match="not a gzip file") as info:
        load_mnist(test_split_copy, "test")
    assert TEST_LABELS in str(info.value)


def test_flipped_pixel_fails_checksum(test_split_copy: Path) -> None:
    path = test_split_copy / TEST_IMAGES
    rewrite(path, functools.partial(_flip_byte, at=16 + 28 * 14 + 14))
    with pytest.raises(DatasetError, match="checksum mismatch") as info:
        load_mnist(test_split_copy, "test")
    assert TEST_IMAGES in str(info.value) and str(test_split_copy) in str(info.value)
    x, _ = load_mnist(test_split_copy, "test", verify=False)  # structure is still fine
    assert x.shape == (10000, 784)


def test_missing_file(test_split_copy: Path) -> None:
    (test_split_copy / TEST_LABELS).unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(test_split_copy, "test")
    message = str(info.value)
    assert TEST_LABELS in message and str(test_split_copy) in message
    assert "tightlip data fetch mnist" in message
    assert isinstance(info.value, FileNotFoundError)


def test_mismatched_counts(tmp_path: Path) -> None:
    write_synthetic_mnist(tmp_path, n_test=5)
    labels = np.zeros(4, dtype=np.uint8)
    (tmp_path / TEST_LABELS).write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(DatasetError, match="5 images but .* 4 labels"):
        load_mnist(tmp_path, "test", verify=False)


def test_uncompressed_files_and_verify_off(tmp_path: Path) -> None:
    sums = write_synthetic_mnist(tmp_path)
    for name in MNIST_FILES["train"]:
        gz = tmp_path / name
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    with pytest.raises(DatasetError, match="checksum"):
        load_mnist(tmp_path, "train")  # not the canonical data
    x, y = load_mnist(tmp_path, "train", verify=False)
    assert x.shape == (7, 784) and y.shape == (7,) and y.dtype == torch.int64
    raw = load_idx(tmp_path / TRAIN_IMAGES.removesuffix(".gz"), sums[TRAIN_IMAGES])
    assert raw.shape == (7, 28, 28) and raw.dtype == np.uint8
    assert torch.equal(x, torch.from_numpy(raw.reshape(7, -1).astype(np.float32)) / 255)


# --------------------------------------------------------------------------------------------
# Generic IDX
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "dtype"), [(0x08, "u1"), (0x09, "i1"), (0x0B, ">i2"), (0x0C, ">i4"), (0x0D, ">f4")]
)
def test_load_idx_types(tmp_path: Path, code: int, dtype: str) -> None:
    values = np.arange(24).reshape(2, 3, 4).astype(dtype)
    raw = struct.pack(">BBBB3I", 0, 0, code, 3, 2, 3, 4) + values.tobytes()
    path = tmp_path / "thing.idx"
    path.write_bytes(raw)
    array = load_idx(path, expected_sha256=hashlib.sha256(raw).hexdigest())
    assert array.shape == (2, 3, 4) and np.array_equal(array, values)
    assert array.dtype.isnative and not array.flags.writeable
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_idx(path, expected_sha256="0" * 64)


def test_load_idx_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x12\x34\x56\x78" + bytes(10))
    with pytest.raises(DatasetError, match="bad IDX magic.*bad.idx"):
        load_idx(bad)
    short = tmp_path / "short.idx"
    short.write_bytes(struct.pack(">BBBB2I", 0, 0, 8, 2, 3, 3) + bytes(5))
    with pytest.raises(DatasetError, match="short.idx: data truncated"):
        load_idx(short)
    with pytest.raises(DatasetNotFoundError, match="nothere.idx"):
        load_idx(tmp_path / "nothere.idx")


def test_cache_sees_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(np.zeros((2, 2), dtype=np.uint8)))
    assert load_idx(path) is load_idx(path)  # cached
    path.write_bytes(idx_bytes(np.ones((3, 2), dtype=np.uint8)))
    assert load_idx(path).shape == (3, 2)


# --------------------------------------------------------------------------------------------
# Where the data is looked for
# --------------------------------------------------------------------------------------------


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, from_env, default = (tmp_path / n for n in ("explicit", "env", "default"))
    for d in (explicit, from_env):
        d.mkdir()
    write_synthetic_mnist(default)  # an implicit place is used only when it holds the files
    monkeypatch.setattr(locate, "default_data_dirs", lambda **_: [tmp_path / "absent", default])

    monkeypatch.setenv("TIGHTLIP_DATA", str(from_env))
    assert resolve_data_dir(explicit) == explicit.resolve()
    assert resolve_data_dir(str(explicit)) == explicit.resolve()
    assert resolve_data_dir(None) == from_env.resolve()

    monkeypatch.delenv("TIGHTLIP_DATA")
    assert resolve_data_dir(None) == default

    monkeypatch.setenv("TIGHTLIP_DATA", "")  # empty counts as unset
    assert resolve_data_dir(None) == default


def test_named_location_missing_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locate, "default_data_dirs", lambda **_: [tmp_path])
    with pytest.raises(DatasetNotFoundError, match="--data.*tightlip data fetch mnist"):
        resolve_data_dir(tmp_path / "typo")
    monkeypatch.setenv("TIGHTLIP_DATA", str(tmp_path / "typo"))
    with pytest.raises(DatasetNotFoundError, match="TIGHTLIP_DATA"):
        resolve_data_dir(None)


def test_nothing_found_lists_every_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    places = [tmp_path / "one", tmp_path / "two"]
    monkeypatch.setattr(locate, "default_data_dirs", lambda **_: places)
    monkeypatch.delenv("TIGHTLIP_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError) as info:
        resolve_data_dir(None)
    message = str(info.value)
    assert all(str(p) in message for p in places)
    assert "tightlip data fetch mnist" in message and "TIGHTLIP_DATA" in message


def test_default_data_dirs(tmp_path: Path) -> None:
    repo, work = tmp_path / "repo", tmp_path / "elsewhere" / "work"
    dirs = default_data_dirs(repo_root=repo, cwd=work)
    assert dirs == [
        (tmp_path / "shared" / "datasets" / "mnist").resolve(),
        (tmp_path / "elsewhere" / "shared" / "datasets" / "mnist").resolve(),
    ]
    assert len(default_data_dirs(repo_root=repo, cwd=repo)) == 1
    real = default_data_dirs()[0]
    assert (
        real
        == (Path(locate.__file__).resolve().parents[3] / ".." / "shared/datasets/mnist").resolve()
    )


def test_default_finds_shared_copy(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIGHTLIP_DATA", raising=False)
    assert resolve_data_dir(None) == mnist_dir


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep test output clean."""


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """A loopback HTTP server (127.0.0.1, a free port) serving ``root``; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A loopback HTTP server serving a fresh directory; yields (directory, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    with serve_directory(root) as url:
        yield root, url


def test_fetch_real_files_via_file_url(mnist_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mnist"
    paths = fetch_mnist(dest, mnist_dir.as_uri(), progress=False)
    assert [p.name for p in paths] == [n for pair in MNIST_FILES.values() for n in pair]
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in paths)
    x, y = load_mnist(dest, "test", limit=10)
    assert x.shape == (10, 784) and y[:3].tolist() == [7, 2, 1]


def test_fetch_over_http(http_root: tuple[Path, str], tmp_path: Path) -> None:
    served, url = http_root
    sums = write_synthetic_mnist(served)
    dest = tmp_path / "dest"
    paths = fetch_mnist(dest, url, checksums=sums, progress=False)
    assert all(p.read_bytes() == (served / p.name).read_bytes() for p in paths)
    assert sorted(p.name for p in dest.iterdir()) == sorted(sums)  # no temporary files left
    x, y = load_mnist(dest, "train", verify=False)
    assert x.shape == (7, 784) and y.shape == (7,)

    # Present and valid: skipped, so even an unreachable URL succeeds ...
    dead = "http://127.0.0.1:9/"
    assert fetch_mnist(dest, dead, checksums=sums, timeout=2, progress=False) == paths
    # ... unless forced.
    with pytest.raises(DatasetError, match="download from http://127.0.0.1:9/.* failed"):
        fetch_mnist(dest, dead, checksums=sums, force=True, timeout=2, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == sorted(sums)


def test_fetch_local_directory_path(tmp_path: Path) -> None:
    sums = write_synthetic_mnist(tmp_path / "src")
    paths = fetch_mnist(tmp_path / "dest", str(tmp_path / "src"), checksums=sums, progress=False)
    assert len(paths) == 4 and all(p.is_file() for p in paths)


def test_fetch_corrupted_download_is_removed(http_root: tuple[Path, str], tmp_path: Path) -> None:
    served, url = http_root
    sums = write_synthetic_mnist(served)
    bad = served / TEST_IMAGES
    bad.write_bytes(gzip.compress(_flip_byte(gzip.decompress(bad.read_bytes()), 100)))
    dest = tmp_path / "dest"
    with pytest.raises(DatasetError, match="checksum mismatch") as info:
        fetch_mnist(dest, url, checksums=sums, progress=False)
    assert TEST_IMAGES in str(info.value) and "removed" in str(info.value)
    assert not (dest / TEST_IMAGES).exists()
    assert not [p for p in dest.iterdir() if p.name.endswith(".part") or p.name.startswith(".")]


def test_fetch_bad_existing_file_is_replaced(http_root: tuple[Path, str], tmp_path: Path) -> None:
    served, url = http_root
    sums = write_synthetic_mnist(served)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / TRAIN_LABELS).write_bytes(b"garbage")
    fetch_mnist(dest, url, checksums=sums, progress=False)
    assert (dest / TRAIN_LABELS).read_bytes() == (served / TRAIN_LABELS).read_bytes()


def test_fetch_garbage_and_missing(http_root: tuple[Path, str], tmp_path: Path) -> None:
    served, url = http_root
    sums = write_synthetic_mnist(served)
    (served / TRAIN_LABELS).write_bytes(b"<html>mirror is down</html>")
    with pytest.raises(DatasetError, match="not a gzip file"):
        fetch_mnist(tmp_path / "a", url, checksums=sums, progress=False)
    (served / TRAIN_LABELS).unlink()
    with pytest.raises(DatasetError, match="404"):
        fetch_mnist(tmp_path / "b", url, checksums=sums, progress=False)
    assert not list((tmp_path / "b").glob(f"*{TRAIN_LABELS}*"))


def test_fetch_real_checksums_reject_synthetic(http_root: tuple[Path, str], tmp_path: Path) -> None:
    served, url = http_root
    write_synthetic_mnist(served)
    with pytest.raises(DatasetError, match="checksum mismatch"):
        fetch_mnist(tmp_path / "dest", url, progress=False)
    assert list((tmp_path / "dest").iterdir()) == []
