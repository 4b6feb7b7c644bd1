"""The end-to-end evaluation: every certificate a run reports is attacked.

Bug fixed here: ``evaluate`` computed local-Lipschitz certificates without the PGD
cross-check that the global and last-layer certificates get.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tightlip.data import MnistData
from tightlip.errors import SoundnessError
from tightlip.eval.config import EvalConfig
from tightlip.eval.experiment import evaluate
from tightlip.methods import METHODS, fit
from tightlip.model import ModelSpec
from tightlip.settings import merge_settings


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(3, 12, generator=torch.Generator().manual_seed(7))
    y = torch.randint(0, 3, (n,), generator=generator)
    return (centres[y] + 0.05 * torch.randn(n, 12, generator=generator)).clamp(0, 1), y


@pytest.fixture(scope="module")
def trained():
    x, y = _blobs(300, 0)
    xt, yt = _blobs(60, 1)
    data = MnistData(x, y, xt, yt)
    spec = ModelSpec(input_dim=12, widths=(16,), num_classes=3, activation="abs")
    settings = merge_settings("tightlip", explicit={"epochs": 3, "batch_size": 50})
    model = fit("tightlip", spec, settings.train, x, y, progress=False).model
    return model, data


EVAL = EvalConfig(
    radii=(0.05, 0.5), pgd_steps=20, attack_limit=60, lower_starts=16, lower_seconds=2
)


def _claims_everything(model, x, y, norm, radii):
    """A wrong local certificate: every point certified at every radius."""
    masks = {f"{r:g}": torch.ones(x.shape[0], dtype=torch.bool) for r in radii}
    return {"certified_accuracy": {k: 1.0 for k in masks}, "certified_mask": masks}


def test_a_wrong_local_certificate_is_caught_by_the_attack(trained) -> None:
    model, data = trained
    liar = replace(METHODS.get("tightlip"), name="liar", certify_local=_claims_everything)
    with pytest.raises(SoundnessError, match="local"):
        evaluate(model, "2", data, EVAL, method=liar)


def test_local_certificates_are_reported_next_to_the_global_ones(trained) -> None:
    model, data = trained

    def nothing(model, x, y, norm, radii):
        masks = {f"{r:g}": torch.zeros(x.shape[0], dtype=torch.bool) for r in radii}
        return {"certified_accuracy": {k: 0.0 for k in masks}, "certified_mask": masks}

    honest = replace(METHODS.get("tightlip"), name="honest", certify_local=nothing)
    metrics = evaluate(model, "2", data, EVAL, method=honest)
    assert metrics["certified_accuracy"]["local"] == {"0.05": 0.0, "0.5": 0.0}
    assert metrics["method"] == "honest"
    assert metrics["upper_certificate"]["method"] == "trivial"
