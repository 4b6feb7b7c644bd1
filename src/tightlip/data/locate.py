"""Where a dataset's directory is.

The directory is chosen by :func:`find_data_dir`: an explicit ``--data DIR``, then
``$TIGHTLIP_DATA``, then ``shared/datasets/DATASET`` beside the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

from tightlip.errors import DatasetNotFoundError

__all__ = ["ENV_VAR", "default_data_dirs", "fetch_hint", "find_data_dir", "find_file"]

ENV_VAR = "TIGHTLIP_DATA"
"""Environment variable naming the dataset directory (used when no ``--data DIR`` is given)."""

_REPO_ROOT = Path(__file__).resolve().parents[3]  # src/tightlip/data/locate.py → repository


def fetch_hint(dataset: str) -> str:
    """What to do about missing data."""
    return (
        f"run `tightlip data fetch {dataset}` to download it, or point --data DIR / "
        f"${ENV_VAR} at a copy"
    )


def default_data_dirs(
    repo_root: Path | None = None, cwd: Path | None = None, dataset: str = "mnist"
) -> list[Path]:
    """The fallback directories of ``dataset``, in search order, without duplicates.

    ``<repository root>/../shared/datasets/DATASET`` (the root found from this file's
    location), then ``<cwd>/../shared/datasets/DATASET``.
    """
    root = _REPO_ROOT if repo_root is None else Path(repo_root)
    here = Path.cwd() if cwd is None else Path(cwd)
    candidates: list[Path] = []
    for base in (root, here):
        candidate = (base / ".." / "shared" / "datasets" / dataset).resolve()
        if candidate not in candidates:
            candidates.append(candidate)
    return candidates


def find_file(directory: Path, name: str) -> Path | None:
    """``directory/name``, else its uncompressed sibling (``name`` without ``.gz``), else None."""
    path = directory / name
    if path.exists():
        return path
    plain = directory / name.removesuffix(".gz")
    if plain != path and plain.exists():
        return plain
    return None


def find_data_dir(data_dir: str | Path | None = None, dataset: str = "mnist") -> Path:
    """The directory to read ``dataset`` from.

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
            f"{fetch_hint(dataset)}"
        )
    env_value = os.environ.get(ENV_VAR, "").strip()
    if env_value:
        path = Path(env_value).expanduser()
        if path.is_dir():
            return path.resolve()
        raise DatasetNotFoundError(
            f"data directory {path} (from ${ENV_VAR}) does not exist or is not a directory; "
            f"{fetch_hint(dataset)}"
        )
    looked = default_data_dirs(dataset=dataset)
    for candidate in looked:
        if candidate.is_dir():
            return candidate
    places = "\n".join(f"  - {p}" for p in looked)
    raise DatasetNotFoundError(
        f"no {dataset} directory found. Looked in (no --data DIR given, ${ENV_VAR} unset):\n"
        f"{places}\n"
        f"Run `tightlip data fetch {dataset}` to download it, or pass --data DIR / set ${ENV_VAR}."
    )
