"""Datasets: finding them, checking them, loading them, fetching them.

One concept per module:

* :mod:`tightlip.data.locate`: where a dataset's directory is (``--data DIR``,
  ``$TIGHTLIP_DATA``, the user cache, the shared copy);
* :mod:`tightlip.data.idx`: the IDX file format, decoded with structural and checksum checks;
* :mod:`tightlip.data.checksums`: digests of files as published (SHA-256, the authors' MD5);
* :mod:`tightlip.data.datasets`: :class:`DatasetInfo` / :class:`Dataset` and the registry
  :data:`DATASETS` (MNIST, Fashion-MNIST), with the loaders;
* :mod:`tightlip.data.cifar`: CIFAR-10 from its binary distribution (never the pickled one);
* :mod:`tightlip.data.npz`: a user's own ``train.npz`` / ``test.npz`` (``--dataset files``);
* :mod:`tightlip.data.normalize`: per-channel normalisation, described and computed (the model
  applies it as its first layer, so certificates stay in raw-input units);
* :mod:`tightlip.data.fetch`: download, verification, atomic placement.

Importing this package registers every data set in :data:`DATASETS`.
"""

from __future__ import annotations

from tightlip.data.cifar import CIFAR10
from tightlip.data.datasets import (
    DATASETS,
    DEFAULT_MNIST_URL,
    FASHION_MNIST,
    MNIST,
    MNIST_FILES,
    MNIST_SHA256,
    Dataset,
    DatasetInfo,
    DatasetSplits,
    IdxDataset,
    MnistData,
    Split,
    fetch_mnist,
    get_dataset,
    load_mnist,
    load_mnist_splits,
    resolve_data_dir,
    stratified_subset,
)
from tightlip.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, load_idx
from tightlip.data.locate import (
    ENV_VAR,
    default_data_dirs,
    default_fetch_dir,
    search_places,
    user_cache_dir,
)
from tightlip.data.normalize import Normalization, parse_normalization
from tightlip.data.npz import FILES
from tightlip.errors import DatasetError, DatasetNotFoundError

__all__ = [
    "CIFAR10",
    "DATASETS",
    "DEFAULT_MNIST_URL",
    "ENV_VAR",
    "FASHION_MNIST",
    "FILES",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "MNIST",
    "MNIST_FILES",
    "MNIST_SHA256",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetSplits",
    "IdxDataset",
    "MnistData",
    "Normalization",
    "Split",
    "default_data_dirs",
    "default_fetch_dir",
    "fetch_mnist",
    "get_dataset",
    "load_idx",
    "load_mnist",
    "load_mnist_splits",
    "parse_normalization",
    "resolve_data_dir",
    "search_places",
    "stratified_subset",
    "user_cache_dir",
]
