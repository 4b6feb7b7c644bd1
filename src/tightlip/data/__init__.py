"""Datasets: finding them, checking them, loading them, fetching them.

One concept per module:

* :mod:`tightlip.data.locate`: where a dataset's directory is (``--data DIR``,
  ``$TIGHTLIP_DATA``, the user cache, the shared copy);
* :mod:`tightlip.data.idx`: the IDX file format, decoded with structural and checksum checks;
* :mod:`tightlip.data.datasets`: :class:`DatasetInfo` / :class:`Dataset` and the registry
  :data:`DATASETS` (MNIST), with the loaders;
* :mod:`tightlip.data.fetch`: download, verification, atomic placement.
"""

from __future__ import annotations

from tightlip.data.datasets import (
    DATASETS,
    DEFAULT_MNIST_URL,
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
from tightlip.errors import DatasetError, DatasetNotFoundError

__all__ = [
    "DATASETS",
    "DEFAULT_MNIST_URL",
    "ENV_VAR",
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
    "Split",
    "default_data_dirs",
    "default_fetch_dir",
    "fetch_mnist",
    "get_dataset",
    "load_idx",
    "load_mnist",
    "load_mnist_splits",
    "resolve_data_dir",
    "search_places",
    "stratified_subset",
    "user_cache_dir",
]
