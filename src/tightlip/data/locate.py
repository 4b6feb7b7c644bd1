"""Where a dataset's directory is.

Every command looks for dataset ``DATASET`` (``mnist``) in this order:

1. ``--data DIR``, when given;
2. ``$TIGHTLIP_DATA``, when set (an empty value counts as unset);
3. the per-user cache :func:`user_cache_dir`: ``$XDG_CACHE_HOME/tightlip/DATASET``, else
   ``~/.cache/tightlip/DATASET`` (XDG Base Directory Specification: a relative
   ``$XDG_CACHE_HOME`` is invalid and ignored);
4. ``../shared/datasets/DATASET`` beside the repository (and beside the working directory),
   :func:`default_data_dirs`.

A place the user named (1, 2) is never silently skipped: if it is not a directory that is an
error, not a fall-back to another copy. Among the implicit places (3, 4) the first directory
that holds every file of the dataset wins, so an empty or half-filled cache (an interrupted
download) does not hide a complete shared copy. ``tightlip data fetch DATASET`` writes to
:func:`default_fetch_dir`, a place this search finds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tightlip.errors import DatasetNotFoundError

__all__ = [
    "CACHE_ENV_VAR",
    "ENV_VAR",
    "Place",
    "default_data_dirs",
    "default_fetch_dir",
    "find_data_dir",
    "find_file",
    "search_places",
    "user_cache_dir",
]

ENV_VAR = "TIGHTLIP_DATA"
"""Environment variable naming the dataset directory (used when no ``--data DIR`` is given)."""

CACHE_ENV_VAR = "XDG_CACHE_HOME"
"""Base directory of per-user caches (XDG Base Directory Specification)."""

_REPO_ROOT = Path(__file__).resolve().parents[3]  # src/tightlip/data/locate.py → repository


@dataclass(frozen=True)
class Place:
    """One place in the search order.

    ``origin`` says where it comes from (``--data DIR``, ``$TIGHTLIP_DATA``, ``user cache``,
    ``shared copy``); ``path`` is ``None`` when the option or variable was not given;
    ``explicit`` places are named by the user and never skipped.
    """

    origin: str
    path: Path | None
    explicit: bool


def _env_path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name, "").strip()
    return Path(value).expanduser() if value else None


def user_cache_dir(dataset: str = "mnist", env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/tightlip/DATASET``, else ``~/.cache/tightlip/DATASET``."""
    env = os.environ if env is None else env
    base = _env_path(env, CACHE_ENV_VAR)
    if base is None or not base.is_absolute():
        base = Path.home() / ".cache"
    return base / "tightlip" / dataset


def default_data_dirs(
    repo_root: Path | None = None, cwd: Path | None = None, dataset: str = "mnist"
) -> list[Path]:
    """The shared fall-back directories of ``dataset``, in search order, without duplicates.

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


def default_fetch_dir(dataset: str = "mnist") -> Path:
    """Where ``tightlip data fetch DATASET`` writes without ``--dest``.

    ``$TIGHTLIP_DATA`` when set (the search would look there first, and only there), else
    :func:`user_cache_dir`. Either way the search of :func:`find_data_dir` finds the result.
    """
    return _env_path(os.environ, ENV_VAR) or user_cache_dir(dataset)


def search_places(data_dir: str | Path | None = None, dataset: str = "mnist") -> list[Place]:
    """Every place looked, in order (see the module docstring)."""
    given = None if data_dir is None or str(data_dir) == "" else Path(data_dir).expanduser()
    return [
        Place("--data DIR", given, explicit=True),
        Place(f"${ENV_VAR}", _env_path(os.environ, ENV_VAR), explicit=True),
        Place("user cache", user_cache_dir(dataset), explicit=False),
        *(Place("shared copy", p, explicit=False) for p in default_data_dirs(dataset=dataset)),
    ]


def find_file(directory: Path, name: str) -> Path | None:
    """``directory/name``, else its uncompressed sibling (``name`` without ``.gz``), else None."""
    path = directory / name
    if path.exists():
        return path
    plain = directory / name.removesuffix(".gz")
    if plain != path and plain.exists():
        return plain
    return None


def _named_by(place: Place) -> str:
    return f"from {place.origin}" if place.origin.startswith("$") else "given with --data"


def _why_not(place: Place, files: Sequence[str]) -> str | None:
    """Why ``place`` cannot be used, or ``None`` if it can."""
    if place.path is None:
        return "not set" if place.origin.startswith("$") else "not given"
    if not place.path.exists():
        return "does not exist"
    if not place.path.is_dir():
        return "is not a directory"
    if place.explicit:
        return None  # a named directory is used as it is; the loader names any missing file
    missing = [name for name in files if find_file(place.path, name) is None]
    return f"lacks {', '.join(missing)}" if missing else None


def find_data_dir(
    data_dir: str | Path | None = None,
    dataset: str = "mnist",
    files: Sequence[str] = (),
    title: str | None = None,
) -> Path:
    """The directory to read ``dataset`` from; ``files`` are the names it must hold.

    Raises:
        DatasetNotFoundError: a named place (``--data``, ``$TIGHTLIP_DATA``) is not a
            directory, or no place holds the data; the one-line message lists every place
            looked, in order, with why each failed, and a command that fixes it.
    """
    title = title or dataset
    looked: list[str] = []
    for place in search_places(data_dir, dataset):
        why = _why_not(place, files)
        if why is None and place.path is not None:
            return place.path.resolve()
        if place.explicit and place.path is not None:
            raise DatasetNotFoundError(
                f"data directory {place.path} ({_named_by(place)}) {why}; fix the path, or "
                f"run `tightlip data fetch {dataset} --dest {place.path}` to download "
                f"{title} there"
            )
        where = f"{place.origin} {place.path}" if place.path is not None else place.origin
        looked.append(f"({len(looked) + 1}) {where}: {why}")
    raise DatasetNotFoundError(
        f"no {title} data found; looked in, in order: {'; '.join(looked)}. "
        f"Run `tightlip data fetch {dataset}` to download it into the user cache "
        f"{user_cache_dir(dataset)}, or pass --data DIR or set ${ENV_VAR} to a directory "
        "that holds the files"
    )
