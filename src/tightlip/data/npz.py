"""A user's own data: ``train.npz`` and ``test.npz`` in one directory (``--dataset files``).

Each file is a NumPy ``.npz`` archive with two arrays:

* ``x``: the inputs, ``N × C × H × W`` (images, channels first) or ``N × D`` (flat features),
  either ``uint8`` pixels in 0–255 (divided by 255 on loading) or floats in ``[0, 1]``;
* ``y``: ``N`` integer labels ``0 … K − 1``.

Everything is checked before use, each failure in one line naming the file: the archive must
be readable with ``np.load(..., allow_pickle=False)`` (object arrays, which would need
unpickling, are refused), hold ``x`` and ``y``, ``x`` must have 2 or 4 dimensions and as many
rows as ``y`` has labels, floats must be finite and in ``[0, 1]``, labels must be integers
whose training set is exactly ``{0, …, K − 1}`` (``K`` classes), the test labels must be among
them, and both splits must have the same example shape. There are no checksums: these are the
user's files.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tightlip.data.datasets import DATASETS, Checksums, Dataset, DatasetInfo, Split
from tightlip.errors import DatasetError

__all__ = ["FILES", "NpzFiles", "check_arrays", "read_npz"]

NPZ_FILES: dict[Split, tuple[str, ...]] = {"train": ("train.npz",), "test": ("test.npz",)}


def _problem(path: Path, what: str) -> DatasetError:
    return DatasetError(f"{path.name}: {what} (file {path})")


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` from an ``.npz`` file, never unpickling anything."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(6)
        if start[:2] != b"PK" and start != b"\x93NUMPY":
            shown = start.hex(" ") or "nothing: it is empty"
            raise _problem(path, f"is not a readable .npz file (starts with {shown})")
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise _problem(path, "is a single .npy array, not an .npz archive of x and y")
        with loaded as archive:
            names = sorted(archive.keys())
            missing = [key for key in ("x", "y") if key not in names]
            if missing:
                raise _problem(
                    path,
                    f"has arrays {names or 'none'} but needs {' and '.join(map(repr, missing))}",
                )
            return archive["x"], archive["y"]
    except DatasetError:
        raise
    except FileNotFoundError as exc:
        raise _problem(path, "file not found") from exc
    except ValueError as exc:
        if "pickle" in str(exc):
            raise _problem(
                path, "holds object arrays, which would need unpickling; tightlip never loads "
                "pickles: save numeric arrays (uint8 or float x, integer y)"
            ) from exc
        raise _problem(path, f"is not a readable .npz file ({exc})") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _problem(path, f"is not a readable .npz file ({exc})") from exc


def check_arrays(x: np.ndarray, y: np.ndarray, path: Path) -> None:
    """Shape, dtype, range and NaN checks of one split (module docstring)."""
    if x.ndim not in (2, 4):
        raise _problem(
            path, f"x has shape {x.shape}: expected N × D (flat) or N × C × H × W (images)"
        )
    if y.ndim != 1:
        raise _problem(path, f"y has shape {y.shape}: expected (N,), one label per example")
    if x.shape[0] != y.shape[0]:
        raise _problem(path, f"x has {x.shape[0]} examples but y has {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise _problem(path, "holds no examples")
    if not np.issubdtype(y.dtype, np.integer):
        raise _problem(path, f"y must hold integer labels, got dtype {y.dtype}")
    if int(y.min()) < 0:
        raise _problem(path, f"y holds the negative label {int(y.min())}: labels are 0 … K − 1")
    if x.dtype == np.uint8:
        return
    if not np.issubdtype(x.dtype, np.floating):
        raise _problem(
            path,
            f"x has dtype {x.dtype}: use uint8 pixels in 0–255 or floats in [0, 1] "
            "(e.g. x.astype(np.uint8) for 8-bit images)",
        )
    finite = np.isfinite(x)
    if not finite.all():
        first = np.unravel_index(int(np.flatnonzero(~finite.reshape(-1))[0]), x.shape)
        count = int((~finite).sum())
        raise _problem(path, f"x holds {count} NaN or infinite values (the first at {first})")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        raise _problem(
            path,
            f"float x must lie in [0, 1] but spans [{low:g}, {high:g}]; scale it (e.g. divide "
            "8-bit pixels by 255) or save uint8 pixels",
        )


class NpzFiles(Dataset):
    """``train.npz`` / ``test.npz`` with ``x`` and ``y`` in a directory (module docstring)."""

    def read_split(
        self, directory: Path, split: Split, verify: bool = True, checksums: Checksums | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        self.check_split_name(split)
        path = self.file_path(directory, self.info.files[split][0])
        x, y = read_npz(path)
        check_arrays(x, y, path)
        return x, y

    def verify_file(
        self, path: Path, name: str, expected_sha256: str | None, cached: bool = True
    ) -> None:
        check_arrays(*read_npz(path), path)

    def classes_of(self, splits: Mapping[Split, tuple[np.ndarray, np.ndarray]]) -> int:
        """``K``, with the training labels exactly ``{0, …, K − 1}`` and the test labels among
        them; the two splits must also agree on the example shape."""
        train_x, train_y = splits["train"]
        test_x, test_y = splits["test"]
        if train_x.shape[1:] != test_x.shape[1:]:
            raise DatasetError(
                f"train.npz has examples of shape {train_x.shape[1:]} but test.npz of shape "
                f"{test_x.shape[1:]}"
            )
        labels = np.unique(train_y)
        classes = int(labels[-1]) + 1
        if labels.shape[0] != classes:
            absent = sorted(set(range(classes)) - {int(v) for v in labels})
            shown = ", ".join(map(str, absent[:10])) + (" …" if len(absent) > 10 else "")
            raise DatasetError(
                f"train.npz: labels must be 0 … K − 1 with every class present, but labels "
                f"{shown} never occur among 0 … {classes - 1}"
            )
        unknown = np.setdiff1d(np.unique(test_y), labels)
        if unknown.size:
            raise DatasetError(
                f"test.npz holds labels {', '.join(map(str, unknown[:10].tolist()))} that "
                f"train.npz never uses (its labels are 0 … {classes - 1})"
            )
        return classes


FILES = DATASETS.register(
    "files",
    NpzFiles(
        DatasetInfo(
            name="files",
            title="your .npz data",
            files=NPZ_FILES,
            sha256={},
            input_shape=(),
            num_classes=0,
            url=None,
            source="the user's own train.npz / test.npz (arrays x and y)",
        )
    ),
    aliases=("npz",),
)
