"""Where datasets are looked for and where `tightlip data fetch` puts them (bug 3).

Before the fix, `tightlip data fetch` wrote to ``data/mnist`` under the working directory, a
place no command searched, and the "not found" message recommended exactly that command. Every
test here runs with ``$HOME``, ``$XDG_CACHE_HOME``, the shared fall-back and the working
directory pointed into ``tmp_path``, so nothing outside it is read or written.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_data import SHARED_MNIST, serve_directory, write_synthetic_mnist
from typer.testing import CliRunner

from tightlip.cli import app
from tightlip.data import (
    MNIST_FILES,
    MNIST_SHA256,
    DatasetNotFoundError,
    default_fetch_dir,
    load_mnist,
    locate,
    resolve_data_dir,
    user_cache_dir,
)

runner = CliRunner()
ALL_FILES = [name for pair in MNIST_FILES.values() for name in pair]


@pytest.fixture(autouse=True)
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Home, cache, shared copy and working directory inside ``tmp_path``; nothing set."""
    places = {n: tmp_path / n for n in ("home", "xdg", "shared", "cwd", "served")}
    for name in ("home", "cwd", "served"):
        places[name].mkdir()
    monkeypatch.setenv("HOME", str(places["home"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(places["xdg"]))
    monkeypatch.delenv("TIGHTLIP_DATA", raising=False)
    monkeypatch.setattr(locate, "default_data_dirs", lambda **_: [places["shared"]])
    monkeypatch.chdir(places["cwd"])
    return places


@pytest.fixture
def mirror(sandbox: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A loopback HTTP mirror of small synthetic MNIST files, pinned as the MNIST checksums."""
    for name, digest in write_synthetic_mnist(sandbox["served"]).items():
        monkeypatch.setitem(MNIST_SHA256, name, digest)
    with serve_directory(sandbox["served"]) as url:
        yield url


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def squeeze(text: str) -> str:
    """``text`` without any whitespace (the console may wrap long lines anywhere)."""
    return "".join(text.split())


def recommended_command(message: str) -> list[str]:
    """The ``tightlip data fetch ...`` command that an error message recommends, as argv."""
    match = re.search(r"`tightlip (data fetch [^`]*)`", message)
    assert match, f"no fetch command recommended in: {message}"
    return shlex.split(match.group(1))


# --------------------------------------------------------------------------------------------
# The user cache
# --------------------------------------------------------------------------------------------


def test_user_cache_dir(sandbox: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    assert user_cache_dir("mnist") == sandbox["xdg"] / "tightlip" / "mnist"
    assert user_cache_dir("fashion-mnist") == sandbox["xdg"] / "tightlip" / "fashion-mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir("mnist") == sandbox["home"] / ".cache" / "tightlip" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per XDG: ignored
    assert user_cache_dir("mnist") == sandbox["home"] / ".cache" / "tightlip" / "mnist"
    assert default_fetch_dir("mnist") == sandbox["home"] / ".cache" / "tightlip" / "mnist"


def test_fetch_defaults_to_user_cache_and_every_command_finds_it(
    sandbox: dict[str, Path], mirror: str
) -> None:
    cache = sandbox["xdg"] / "tightlip" / "mnist"
    code, output = cli("data", "fetch", "mnist", "--url", mirror)
    assert code == 0, output
    assert sorted(p.name for p in cache.iterdir()) == sorted(ALL_FILES)
    assert not (sandbox["cwd"] / "data").exists()
    assert "note:" not in output  # the destination is searched, nothing to point out

    code, output = cli("data", "where")
    assert (code, output.strip()) == (0, str(cache))
    assert cli("data", "where", "mnist")[1].strip() == str(cache)
    x, y = load_mnist(None, "train")  # no --data, pinned (here: patched) checksums verified
    assert x.shape == (7, 784) and y.shape == (7,)


def test_fetch_real_mnist_over_http_into_cache(sandbox: dict[str, Path]) -> None:
    source = SHARED_MNIST.resolve()
    if not all((source / name).is_file() for name in ALL_FILES):
        pytest.skip(f"real MNIST not available at {source}")
    for name in ALL_FILES:
        shutil.copy(source / name, sandbox["served"] / name)
    with serve_directory(sandbox["served"]) as url:
        code, output = cli("data", "fetch", "mnist", "--url", url)
    assert code == 0, output
    cache = sandbox["xdg"] / "tightlip" / "mnist"
    assert cli("data", "where")[1].strip() == str(cache)
    x, y = load_mnist(None, "test", limit=3)
    assert x.shape == (3, 784) and y.tolist() == [7, 2, 1]


def test_fetch_without_dest_honours_tightlip_data(
    sandbox: dict[str, Path], mirror: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = sandbox["home"] / "my-mnist"
    monkeypatch.setenv("TIGHTLIP_DATA", str(target))
    code, output = cli("data", "fetch", "mnist", "--url", mirror)
    assert code == 0, output
    assert sorted(p.name for p in target.iterdir()) == sorted(ALL_FILES)
    assert cli("data", "where")[1].strip() == str(target)


def test_fetch_to_an_unsearched_dest_says_how_to_use_it(
    sandbox: dict[str, Path], mirror: str
) -> None:
    elsewhere = sandbox["home"] / "elsewhere"
    code, output = cli("data", "fetch", "mnist", "--url", mirror, "--dest", str(elsewhere))
    assert code == 0, output
    assert "note:" in output and squeeze(f"--data {elsewhere}") in squeeze(output)
    assert cli("data", "where", "--data", str(elsewhere))[1].strip() == str(elsewhere)


# --------------------------------------------------------------------------------------------
# Search order
# --------------------------------------------------------------------------------------------


def test_data_beats_env_beats_cache_beats_shared(
    sandbox: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit, from_env = sandbox["home"] / "explicit", sandbox["home"] / "env"
    cache, shared = sandbox["xdg"] / "tightlip" / "mnist", sandbox["shared"]
    for directory in (explicit, from_env, cache, shared):
        write_synthetic_mnist(directory)
    monkeypatch.setenv("TIGHTLIP_DATA", str(from_env))

    def where(*extra: str) -> str:
        code, output = cli("data", "where", *extra)
        assert code == 0, output
        return output.strip()

    assert where("--data", str(explicit)) == str(explicit)
    assert where() == str(from_env)
    monkeypatch.delenv("TIGHTLIP_DATA")
    assert where() == str(cache)
    assert resolve_data_dir(None) == cache
    for name in ALL_FILES[1:]:  # an interrupted download: the cache lacks files
        (cache / name).unlink()
    assert where() == str(shared)
    shutil.rmtree(cache)
    assert where() == str(shared)


# --------------------------------------------------------------------------------------------
# Not found: every place, why, and a command that fixes it
# --------------------------------------------------------------------------------------------


def test_not_found_lists_all_four_places_in_order(sandbox: dict[str, Path]) -> None:
    sandbox["shared"].mkdir()  # exists but holds nothing
    with pytest.raises(DatasetNotFoundError) as info:
        resolve_data_dir(None)
    message = str(info.value)
    assert "\n" not in message
    cache = str(sandbox["xdg"] / "tightlip" / "mnist")
    parts = [
        "--data DIR: not given",
        "$TIGHTLIP_DATA: not set",
        f"user cache {cache}: does not exist",
        f"shared copy {sandbox['shared']}: lacks {ALL_FILES[0]}",
    ]
    positions = [message.find(part) for part in parts]
    assert -1 not in positions, message
    assert positions == sorted(positions)

    code, output = cli("data", "where")
    assert code == 2
    assert all(squeeze(part) in squeeze(output) for part in parts), output


def test_recommended_command_fixes_not_found(sandbox: dict[str, Path], mirror: str) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        resolve_data_dir(None)
    command = recommended_command(str(info.value))
    code, output = cli(*command, "--url", mirror)
    assert code == 0, output
    assert cli("data", "where")[0] == 0
    x, _ = load_mnist(None, "test")
    assert x.shape == (5, 784)


@pytest.mark.parametrize("named_by", ["--data", "TIGHTLIP_DATA"])
def test_recommended_command_fixes_a_missing_named_directory(
    sandbox: dict[str, Path], mirror: str, monkeypatch: pytest.MonkeyPatch, named_by: str
) -> None:
    typo = sandbox["home"] / "typo"
    write_synthetic_mnist(user_cache_dir("mnist"))  # a copy elsewhere must not be used instead
    extra = ["--data", str(typo)] if named_by == "--data" else []
    if named_by == "TIGHTLIP_DATA":
        monkeypatch.setenv("TIGHTLIP_DATA", str(typo))
    with pytest.raises(DatasetNotFoundError) as info:
        resolve_data_dir(typo if extra else None)
    assert str(typo) in str(info.value) and "\n" not in str(info.value)
    assert cli("data", "where", *extra)[0] == 2

    code, output = cli(*recommended_command(str(info.value)), "--url", mirror)
    assert code == 0, output
    code, output = cli("data", "where", *extra)
    assert (code, output.strip()) == (0, str(typo))


def test_missing_file_recommends_a_command_that_fetches_it(
    sandbox: dict[str, Path], mirror: str
) -> None:
    directory = sandbox["home"] / "partial"
    write_synthetic_mnist(directory)
    (directory / MNIST_FILES["test"][1]).unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(directory, "test")
    code, output = cli(*recommended_command(str(info.value)), "--url", mirror)
    assert code == 0, output
    x, _ = load_mnist(directory, "test")
    assert x.shape == (5, 784)


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["data", "where", "nosuch"], ["data", "fetch", "nosuch"]])
def test_unknown_dataset_is_one_line_exit_2(command: list[str]) -> None:
    code, output = cli(*command)
    assert code == 2
    assert len(output.strip().splitlines()) == 1, output
    assert "unknown dataset 'nosuch'" in output and "mnist" in output
