"""The command line on other data: --dataset files / cifar10, --normalize, --no-verify, data
fetch and data where for every registered data set."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from test_datasets_formats import write_cifar_archive
from typer.testing import CliRunner

from tightlip.cli import app
from tightlip.data import CIFAR10, DATASETS
from tightlip.data.cifar import CIFAR10_ARCHIVE
from tightlip.models.normalized import Normalized
from tightlip.train.checkpoint import load_checkpoint

runner = CliRunner()

FAST_EVAL = ["--attack-limit", "20", "--lower-seconds", "0.5", "--radii", "0.05,0.1"]


@pytest.fixture(autouse=True)
def _private_places(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    monkeypatch.delenv("TIGHTLIP_DATA", raising=False)


def own_data(directory: Path, n_train: int = 120, n_test: int = 40) -> Path:
    """Two learnable classes of 2 × 3 × 3 'images', as a user would save them."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % 2
        x = rng.uniform(0, 0.5, size=(n, 2, 3, 3)) + 0.5 * y[:, None, None, None]
        np.savez(directory / f"{name}.npz", x=x.astype(np.float32), y=y)
    return directory


def test_train_on_own_npz_with_normalisation_then_certify(tmp_path: Path) -> None:
    data = own_data(tmp_path / "data")
    out = tmp_path / "run"
    args = ["train", "--dataset", "files", "--data", str(data), "--normalize", "auto",
            "--widths", "16", "--epochs", "3", "--batch-size", "16", "--out", str(out), *FAST_EVAL]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["dataset"] == "files" and metrics["config"]["normalize"] == "auto"
    assert metrics["config"]["model"]["input_dim"] == 18
    assert metrics["config"]["model"]["num_classes"] == 2
    assert metrics["clean_accuracy"] > 0.75  # chance is 0.5
    checkpoint = load_checkpoint(out / "checkpoint")
    assert isinstance(checkpoint.model, Normalized)
    assert checkpoint.config["data"] == {"dataset": "files", "verify": True}
    assert checkpoint.config["model"]["arguments"]["input_shape"] == [2, 3, 3]
    certified = runner.invoke(
        app, ["certify", str(out / "checkpoint"), "--data", str(data), "--out",
              str(tmp_path / "cert"), "--attack-limit", "20", "--lower-seconds", "0.5"]
    )
    assert certified.exit_code == 0, certified.output
    again = json.loads((tmp_path / "cert" / "metrics.json").read_text())
    assert again["lipschitz_upper"] == metrics["lipschitz_upper"]
    assert again["clean_accuracy"] == metrics["clean_accuracy"]


def test_bad_own_data_is_one_line_exit_2(tmp_path: Path) -> None:
    data = own_data(tmp_path / "data")
    np.savez(data / "test.npz", x=np.full((3, 2, 3, 3), 3.0), y=np.zeros(3, int))
    result = runner.invoke(
        app, ["train", "--dataset", "files", "--data", str(data), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "test.npz: float x must lie in [0, 1]" in result.output
    unknown = runner.invoke(app, ["train", "--dataset", "imagenet", "--out", str(tmp_path / "p")])
    assert unknown.exit_code == 2 and "cifar10" in unknown.output


def test_sandwich_with_normalize_is_refused(tmp_path: Path) -> None:
    data = own_data(tmp_path / "data", 20, 6)
    result = runner.invoke(
        app, ["train", "--method", "sandwich", "--dataset", "files", "--data", str(data),
              "--normalize", "auto", "--epochs", "1", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "does not accept an input normalisation" in result.output


def test_cifar_no_verify_trains_a_model_of_its_shape(tmp_path: Path) -> None:
    write_cifar_archive(tmp_path / "cifar" / CIFAR10_ARCHIVE, per_batch=8)
    base = ["train", "--dataset", "cifar10", "--data", str(tmp_path / "cifar"), "--widths", "8",
            "--epochs", "1", "--no-certify"]
    refused = runner.invoke(app, [*base, "--out", str(tmp_path / "a")])
    assert refused.exit_code == 2 and "checksum mismatch" in refused.output
    assert "--no-verify" in refused.output or "verify=False" in refused.output
    result = runner.invoke(app, [*base, "--no-verify", "--normalize",
                                 "0.49,0.48,0.45/0.25,0.24,0.26", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(tmp_path / "b" / "checkpoint")
    assert checkpoint.config["data"] == {"dataset": "cifar10", "verify": False}
    assert checkpoint.model.model[1].weight.shape == (8, 3072)


def test_data_fetch_and_where_for_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    write_cifar_archive(mirror / CIFAR10_ARCHIVE)
    raw = (mirror / CIFAR10_ARCHIVE).read_bytes()
    dest = tmp_path / "dest"
    refused = runner.invoke(app, ["data", "fetch", "cifar10", "--url", str(mirror), "--dest", str(dest)])
    assert refused.exit_code == 2 and "failed verification" in refused.output
    monkeypatch.setitem(CIFAR10.info.sha256, CIFAR10_ARCHIVE, hashlib.sha256(raw).hexdigest())
    monkeypatch.setitem(CIFAR10.info.md5, CIFAR10_ARCHIVE, hashlib.md5(raw).hexdigest())
    fetched = runner.invoke(app, ["data", "fetch", "cifar10", "--url", str(mirror)])
    assert fetched.exit_code == 0, fetched.output
    where = runner.invoke(app, ["data", "where", "cifar10"])
    assert where.exit_code == 0
    assert Path(where.output.strip()).name == "cifar10"
    assert (Path(where.output.strip()) / CIFAR10_ARCHIVE).read_bytes() == raw


@pytest.mark.parametrize("name", DATASETS.names())
def test_data_where_names_every_place_for_each_dataset(name: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "where", name])
    if result.exit_code == 0:  # a shared copy beside the repository (MNIST here)
        assert Path(result.output.strip()).is_dir()
        return
    assert result.exit_code == 2
    assert "user cache" in result.output and "shared copy" in result.output
    given = runner.invoke(app, ["data", "where", name, "--data", str(tmp_path)])
    assert given.exit_code == 0 and given.output.strip() == str(tmp_path.resolve())


@pytest.mark.parametrize(
    ("method", "kind", "activation"), [("sandwich", "sandwich", "relu"), ("orthogonal", "orthogonal", "maxmin")]
)
def test_metrics_record_the_network_that_was_trained(tmp_path: Path, method, kind, activation) -> None:
    """Issue 21, item 3: a Sandwich or orthogonal run recorded ``activation: sincos, bias:
    false`` (the default spec) for a network with its own activation and biases."""
    data = own_data(tmp_path / "data", 40, 10)
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["train", "--method", method, "--dataset", "files", "--data", str(data),
              "--widths", "8", "--epochs", "1", "--out", str(out), *FAST_EVAL]
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["model"]["kind"] == kind
    assert activation in config["model"]["activation"].lower()
    assert "sincos" not in config["model"]["activation"].lower()
    layers = config["network"]["layers"]
    assert layers[-1]["out_features"] == 2 and layers[-1]["activation"] is None
