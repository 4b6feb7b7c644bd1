"""Datasets: what each one is, and how to find, check, load and fetch it.

A :class:`Dataset` couples a :class:`DatasetInfo` (name, files per split, pinned checksums,
input shape, number of classes, download mirror, source) with the code that reads its file
format. Datasets are registered in :data:`DATASETS` (a :class:`~tightlip.registry.Registry`),
so a new data set is one entry: Fashion-MNIST is an :class:`IdxDataset` with its own
checksums (below); another format is one :class:`Dataset` subclass implementing
:meth:`Dataset.read_split` and :meth:`Dataset.verify_file`: CIFAR-10's binary distribution in
:mod:`tightlip.data.cifar`, a user's own ``.npz`` files in :mod:`tightlip.data.npz`.

Loaded data is always ``float32`` inputs of shape ``(N, prod(input_shape))`` in ``[0, 1]``
(uint8 pixels divided by 255; float inputs as given, checked to lie in ``[0, 1]``) and
``int64`` labels of shape ``(N,)``; :class:`DatasetSplits` also carries the input shape
(channels first), so a model or a per-channel normalisation can restore it.

MNIST (LeCun, Bottou, Bengio and Haffner, "Gradient-based learning applied to document
recognition", Proc. IEEE 86(11), 1998; files from http://yann.lecun.com/exdb/mnist/) is read
from the four IDX files ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (format and checks in
:mod:`tightlip.data.idx`). Beyond the IDX structure, the image magic must be 2051
(``N × 28 × 28``) and the label magic 2049 (``N``), image and label counts must agree, and by
default the SHA-256 of the decompressed bytes must equal the pinned value.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from tightlip.data.checksums import check_file_digests
from tightlip.data.fetch import Report, fetch_files
from tightlip.data.idx import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    IdxRecord,
    check_sha256,
    decode_idx,
    file_problem,
    read_decompressed,
    read_idx,
)
from tightlip.data.locate import find_data_dir, find_file
from tightlip.errors import BadArgumentError, DatasetError, DatasetNotFoundError
from tightlip.registry import Registry

__all__ = [
    "DATASETS",
    "DEFAULT_MNIST_URL",
    "MNIST",
    "MNIST_FILES",
    "MNIST_SHA256",
    "Dataset",
    "DatasetInfo",
    "DatasetSplits",
    "FASHION_MNIST",
    "FASHION_MNIST_MD5",
    "FASHION_MNIST_SHA256",
    "IdxDataset",
    "MnistData",
    "Split",
    "fetch_mnist",
    "get_dataset",
    "load_mnist",
    "load_mnist_splits",
    "resolve_data_dir",
    "stratified_subset",
]

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")

Checksums = Mapping[str, str | None]
"""Per file name: the expected SHA-256, or ``None`` to skip that file's check."""

ChecksumOf = Literal["content", "file"]
"""What a pinned SHA-256 is the hash of: the decompressed ``content``, or the ``file`` as
published (the only thing an MD5 published by a data set's authors can be checked against)."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set is: everything except the code that reads its format.

    Attributes:
        name: registry name, also the name of its directory (``mnist``).
        title: how messages name it (``MNIST``).
        files: ``split → file names`` (their meaning is up to the format; two splits may
            share a file, e.g. one archive).
        sha256: pinned SHA-256 per file name, of what ``checksum_of`` says.
        input_shape: shape of one example, channels first (``(1, 28, 28)``); ``()`` when the
            files decide it (a user's own data).
        num_classes: number of labels (``0``: the files decide it).
        url: base URL of a download mirror, or ``None`` if it cannot be fetched.
        source: where the data comes from (paper and site).
        md5: MD5 per file name as published by the data set's authors, of the file itself.
        checksum_of: ``"content"`` (decompressed bytes) or ``"file"`` (the file as published).
    """

    name: str
    title: str
    files: Mapping[Split, tuple[str, ...]]
    sha256: Mapping[str, str]
    input_shape: tuple[int, ...]
    num_classes: int
    url: str | None = None
    source: str = ""
    md5: Mapping[str, str] = field(default_factory=dict)
    checksum_of: ChecksumOf = "content"

    @property
    def input_dim(self) -> int:
        """Number of input features, ``prod(input_shape)``."""
        return math.prod(self.input_shape)

    def all_files(self) -> tuple[str, ...]:
        """Every file name, split by split, each once."""
        names = (name for split in SPLITS for name in self.files.get(split, ()))
        return tuple(dict.fromkeys(names))


@dataclass
class DatasetSplits:
    """Train and test splits: ``*_x`` float32 ``(N, d)`` in ``[0, 1]``, ``*_y`` int64 ``(N,)``.

    ``input_shape`` is the shape of one example, channels first (``(1, 28, 28)``,
    ``(3, 32, 32)``, or ``(d,)`` for flat data); ``None`` means flat, ``(d,)``.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    data_dir: Path | None = None
    num_classes: int = 10
    input_shape: tuple[int, ...] | None = None
    dataset: str = "mnist"

    @property
    def input_dim(self) -> int:
        """Number of input features (784 for MNIST)."""
        return int(self.train_x.shape[1])

    @property
    def example_shape(self) -> tuple[int, ...]:
        """:attr:`input_shape`, or ``(input_dim,)`` when it is not known."""
        return self.input_shape if self.input_shape is not None else (self.input_dim,)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(train={tuple(self.train_x.shape)}, "
            f"test={tuple(self.test_x.shape)}, data_dir={self.data_dir})"
        )


MnistData = DatasetSplits
"""The former name of :class:`DatasetSplits`."""


def stratified_subset(labels: torch.Tensor | np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a deterministic, class-stratified random subset of size ``limit``.

    Each class gets ``limit · (its share)`` examples, rounded by largest remainder so the total
    is exactly ``limit``; within a class the examples are drawn without replacement by a
    generator seeded with ``seed``. ``limit ≥ len(labels)`` returns every index.
    """
    y = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    n = int(y.shape[0])
    if limit < 0:
        raise BadArgumentError(f"limit must be non-negative, got {limit}")
    if seed < 0:
        raise BadArgumentError(f"seed must be non-negative, got {seed}")
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


class Dataset(ABC):
    """A registered data set: its :class:`DatasetInfo` and the code reading its format."""

    def __init__(self, info: DatasetInfo) -> None:
        self.info = info

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info.name!r})"

    # -- format-specific ------------------------------------------------------------------

    @abstractmethod
    def read_split(
        self, directory: Path, split: Split, verify: bool = True, checksums: Checksums | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw inputs (``N × input_shape``, uint8) and labels (``N``) of one split, checked.

        ``verify`` checks the pinned checksums (``checksums`` overrides them per file name).

        Raises:
            DatasetError: a file is missing or corrupt; the message names it.
        """

    @abstractmethod
    def verify_file(
        self, path: Path, name: str, expected_sha256: str | None, cached: bool = True
    ) -> None:
        """Check one file on its own (structure, and checksum unless ``expected_sha256`` is None).

        ``cached=False`` must not keep anything cached (for temporary download files).
        """

    # -- shared ---------------------------------------------------------------------------

    def checksums(self, overrides: Checksums | None = None) -> dict[str, str | None]:
        """The pinned checksums, with ``overrides`` applied."""
        return {**self.info.sha256, **(overrides or {})}

    def file_digests(self, name: str, sha256: str | None) -> dict[str, str | None]:
        """The digests a file as published must have: ``sha256``, and the authors' MD5 when
        ``sha256`` is the pinned value (an override names another file, so the MD5 is moot)."""
        pinned = sha256 is not None and sha256 == self.info.sha256.get(name)
        return {"sha256": sha256, "md5": self.info.md5.get(name) if pinned else None}

    def check_published_file(
        self, path: Path, name: str, sha256: str | None, cached: bool = True
    ) -> None:
        """Check the file ``name`` found at ``path`` against its digests as published.

        An uncompressed copy (``path`` named without ``.gz``) cannot match digests of the
        compressed file, so it is refused with what to do instead.
        """
        digests = self.file_digests(name, sha256)
        if all(v is None for v in digests.values()):
            return
        if name.endswith(".gz") and path.name == name.removesuffix(".gz"):
            raise DatasetError(
                f"{path.name}: the pinned checksums of {self.info.title} are those of the "
                f"published file {name}, and cannot be checked on an uncompressed copy (file "
                f"{path}); put the original {name} there, or pass --no-verify (verify=False) "
                "to skip the checksums"
            )
        check_file_digests(
            path,
            digests,
            cached,
            hint="use --no-verify (verify=False) only for files you made yourself",
        )

    def check_split_name(self, split: str) -> None:
        """Raise :class:`BadArgumentError` unless this data set has ``split``."""
        if split not in self.info.files:
            choices = " or ".join(repr(s) for s in self.info.files)
            raise BadArgumentError(f"unknown split {split!r}: choose {choices}")

    def locate(self, data_dir: str | Path | None = None) -> Path:
        """The directory to read from (the search order is in :mod:`tightlip.data.locate`)."""
        return find_data_dir(data_dir, self.info.name, self.info.all_files(), self.info.title)

    def file_path(self, directory: Path, name: str) -> Path:
        """Where file ``name`` is in ``directory`` (an uncompressed copy is accepted)."""
        path = find_file(directory, name)
        if path is not None:
            return path
        wanted, plain = directory / name, directory / name.removesuffix(".gz")
        raise DatasetNotFoundError(
            f"{name}: file not found in {directory} (looked for {wanted}"
            + (f" and {plain}" if plain != wanted else "")
            + f"); run `tightlip data fetch {self.info.name} --dest {directory}` to download "
            "the missing files into it"
        )

    def to_tensors(
        self, inputs: np.ndarray, labels: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh ``float32 (N, d)`` inputs in ``[0, 1]`` and ``int64 (N,)`` labels.

        uint8 inputs are pixels, divided by 255; float inputs (already checked to lie in
        ``[0, 1]`` by the format) are rounded to float32, which keeps them in ``[0, 1]``
        (rounding is monotone and 0 and 1 are representable).
        """
        if inputs.dtype == np.uint8:
            pixels = torch.from_numpy(np.array(inputs, copy=True))  # the cache is read-only
            x = pixels.reshape(pixels.shape[0], -1).to(torch.float32).div_(255.0)
        else:
            x = torch.from_numpy(np.array(inputs, dtype=np.float32, copy=True))
            x = x.reshape(x.shape[0], -1)
        y = torch.from_numpy(labels.astype(np.int64))
        return x, y

    def classes_of(self, splits: Mapping[Split, tuple[np.ndarray, np.ndarray]]) -> int:
        """The number of classes (:attr:`DatasetInfo.num_classes`; formats may read the files)."""
        return self.info.num_classes

    def shape_of(self, splits: Mapping[Split, tuple[np.ndarray, np.ndarray]]) -> tuple[int, ...]:
        """The shape of one example (:attr:`DatasetInfo.input_shape`, else the train split's)."""
        return tuple(self.info.input_shape) or tuple(splits["train"][0].shape[1:])

    def load(
        self,
        data_dir: str | Path | None = None,
        split: Split = "train",
        limit: int | None = None,
        verify: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One split as ``(inputs, labels)``; ``limit`` keeps the first ``limit`` examples.

        The returned tensors are fresh copies, safe to modify.

        Raises:
            DatasetError: missing or corrupt files; the message names the file and directory.
            BadArgumentError: unknown ``split`` or a negative ``limit``.
        """
        if limit is not None and limit < 0:
            raise BadArgumentError(f"limit must be non-negative, got {limit}")
        self.check_split_name(split)
        directory = self.locate(data_dir)
        inputs, labels = self.read_split(directory, split, verify)
        if limit is not None:
            inputs, labels = inputs[:limit], labels[:limit]
        return self.to_tensors(inputs, labels)

    def load_splits(
        self,
        data_dir: str | Path | None = None,
        train_limit: int | None = None,
        test_limit: int | None = None,
        seed: int = 0,
        verify: bool = True,
    ) -> DatasetSplits:
        """Both splits; limits take a deterministic class-stratified subset (``--quick``).

        The subsets depend only on ``seed`` and the limits (see :func:`stratified_subset`); the
        train and test subsets use independent streams ``2·seed`` and ``2·seed + 1``. Examples
        keep their original order.
        """
        directory = self.locate(data_dir)
        limits: dict[Split, int | None] = {"train": train_limit, "test": test_limit}
        raw = {split: self.read_split(directory, split, verify) for split in limits}
        classes, shape = self.classes_of(raw), self.shape_of(raw)
        tensors: list[torch.Tensor] = []
        for stream, (split, limit) in enumerate(limits.items()):
            inputs, labels = raw[split]
            if limit is not None:
                index = stratified_subset(labels, limit, seed=2 * seed + stream)
                inputs, labels = inputs[index], labels[index]
            tensors += self.to_tensors(inputs, labels)
        return DatasetSplits(
            *tensors,
            data_dir=directory,
            num_classes=classes,
            input_shape=shape,
            dataset=self.info.name,
        )

    def fetch(
        self,
        dest: str | Path,
        url: str | None = None,
        force: bool = False,
        timeout: float = 60,
        checksums: Checksums | None = None,
        progress: bool = True,
        report: Report | None = None,
    ) -> list[Path]:
        """Download every file from the base ``url`` (default: the mirror) into ``dest``.

        Each file is verified before it is put in place (see :func:`fetch_files`); then every
        split is read once more as a whole, so files that do not belong together are caught.
        ``checksums`` overrides the pinned SHA-256 per file name (``None`` skips that check).

        Returns:
            The paths of all files, split by split, in :attr:`DatasetInfo.files` order.

        Raises:
            DatasetError: no mirror is known, a download failed, or a file is corrupt.
        """
        base = url or self.info.url
        if base is None:
            raise DatasetError(
                f"{self.info.title} has no download mirror; pass a URL, or copy the files "
                "into a directory and pass --data DIR"
            )
        sums = self.checksums(checksums)

        def verify(path: Path, name: str, cached: bool) -> None:
            self.verify_file(path, name, sums.get(name), cached)

        paths = fetch_files(
            dest, base, self.info.all_files(), verify, force, timeout, progress, report
        )
        directory = Path(dest).expanduser()
        for split in self.info.files:
            self.read_split(directory, split, verify=True, checksums=sums)
        return paths


class IdxDataset(Dataset):
    """A data set in MNIST's layout: per split an IDX images file and an IDX labels file.

    ``info.files[split]`` is ``(images file, labels file)``; images are uint8 with magic
    2051 and shape ``(N, H, W)`` where ``info.input_shape == (1, H, W)``; labels are uint8
    with magic 2049 and shape ``(N,)``. The checksum is that of the decompressed bytes.
    """

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(H, W)``: one image as stored."""
        return self.info.input_shape[1:]

    def _check_images(self, record: IdxRecord, path: Path) -> None:
        if record.array.ndim != 1 + len(self.image_shape) or (
            record.array.shape[1:] != self.image_shape
        ):
            expected = ", ".join(("N", *map(str, self.image_shape)))
            raise file_problem(
                path, f"images have shape {record.array.shape}, expected ({expected})"
            )

    def _is_images(self, name: str) -> bool:
        return any(files[0] == name for files in self.info.files.values())

    def read_split(
        self, directory: Path, split: Split, verify: bool = True, checksums: Checksums | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        self.check_split_name(split)
        sums = self.checksums(checksums)
        image_name, label_name = self.info.files[split]
        image_path = self.file_path(directory, image_name)
        label_path = self.file_path(directory, label_name)

        images = read_idx(image_path, IDX_IMAGES_MAGIC)
        self._check_images(images, image_path)
        labels = read_idx(label_path, IDX_LABELS_MAGIC)
        if verify:
            for record, path, name in (
                (images, image_path, image_name),
                (labels, label_path, label_name),
            ):
                self._check_pins(record, path, name, sums.get(name), cached=True)
        if images.array.shape[0] != labels.array.shape[0]:
            raise DatasetError(
                f"{image_path.name} holds {images.array.shape[0]} images but {label_path.name} "
                f"holds {labels.array.shape[0]} labels (in {directory}); the two files do not "
                "belong together"
            )
        return images.array, labels.array

    def verify_file(
        self, path: Path, name: str, expected_sha256: str | None, cached: bool = True
    ) -> None:
        is_images = self._is_images(name)
        magic = IDX_IMAGES_MAGIC if is_images else IDX_LABELS_MAGIC
        if cached:
            record = read_idx(path, magic)
        else:
            record = decode_idx(read_decompressed(path, gz=name.endswith(".gz")), path, magic)
        if is_images:
            self._check_images(record, path)
        self._check_pins(record, path, name, expected_sha256, cached)

    def _check_pins(
        self, record: IdxRecord, path: Path, name: str, sha256: str | None, cached: bool
    ) -> None:
        """The pinned checksums of one file: of its content or of the file as published."""
        if self.info.checksum_of == "file":
            self.check_published_file(path, name, sha256, cached)
        elif sha256 is not None:
            check_sha256(record, path, sha256)


DATASETS: Registry[Dataset] = Registry("dataset")
"""Every data set tightlip knows, by name."""


def get_dataset(name: str) -> Dataset:
    """The registered data set called ``name`` (:class:`UnknownNameError` lists the choices)."""
    return DATASETS.get(name)


# --------------------------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------------------------

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

MNIST = DATASETS.register(
    "mnist",
    IdxDataset(
        DatasetInfo(
            name="mnist",
            title="MNIST",
            files=MNIST_FILES,
            sha256=MNIST_SHA256,
            input_shape=(1, 28, 28),
            num_classes=10,
            url=DEFAULT_MNIST_URL,
            source="LeCun, Bottou, Bengio and Haffner, Proc. IEEE 86(11), 1998; "
            "http://yann.lecun.com/exdb/mnist/",
        )
    ),
)


# --------------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------------

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
"""The download mirror named in the Fashion-MNIST README (any mirror works: checksums decide)."""

FASHION_MNIST_MD5: dict[str, str] = {
    # MD5 of each .gz file as published in the Fashion-MNIST README (Xiao, Rasul and Vollgraf
    # 2017), the same values torchvision's FashionMNIST pins.
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

FASHION_MNIST_SHA256: dict[str, str] = {
    # SHA-256 of the same .gz files. The README publishes only MD5s; these sums are the ones
    # pinned by several independent loaders of the published files. Both are checked.
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}

FASHION_MNIST = DATASETS.register(
    "fashion-mnist",
    IdxDataset(
        DatasetInfo(
            name="fashion-mnist",
            title="Fashion-MNIST",
            files=MNIST_FILES,
            sha256=FASHION_MNIST_SHA256,
            md5=FASHION_MNIST_MD5,
            checksum_of="file",
            input_shape=(1, 28, 28),
            num_classes=10,
            url=FASHION_MNIST_URL,
            source="Xiao, Rasul and Vollgraf, Fashion-MNIST, arXiv:1708.07747, 2017; "
            "https://github.com/zalandoresearch/fashion-mnist",
        )
    ),
    aliases=("fashion",),
)


def resolve_data_dir(data_dir: str | Path | None = None, dataset: str = "mnist") -> Path:
    """The directory that ``dataset`` would be read from (see :meth:`Dataset.locate`)."""
    return get_dataset(dataset).locate(data_dir)


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
    skips the checksum (the structure is still checked), e.g. for your own data in the same IDX
    layout. The returned tensors are fresh copies, safe to modify.

    Raises:
        DatasetError: missing or corrupt files; the message names the file and the directory.
        ValueError: unknown ``split`` or a negative ``limit``.
    """
    return MNIST.load(data_dir, split, limit, verify)


def load_mnist_splits(
    data_dir: str | Path | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    seed: int = 0,
    verify: bool = True,
) -> DatasetSplits:
    """Both MNIST splits; see :meth:`Dataset.load_splits`."""
    return MNIST.load_splits(data_dir, train_limit, test_limit, seed, verify)


def fetch_mnist(
    dest: str | Path,
    url: str = DEFAULT_MNIST_URL,
    force: bool = False,
    timeout: float = 60,
    checksums: Checksums | None = None,
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
    return MNIST.fetch(dest, url, force, timeout, checksums, progress)
