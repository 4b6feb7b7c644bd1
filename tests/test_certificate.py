"""Certificate: keyword-only, ``side``, explicit JSON policy; the bounds runner stamps it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tightlip.bounds as bounds
from tightlip.bounds import registry
from tightlip.certificate import Certificate, tightness
from tightlip.errors import MethodNotApplicableError, UnknownNameError


def _certificate(**details: object) -> Certificate:
    return Certificate(value=2.0, method="m", norm="2", side="upper", sound=True, details=details)


def test_construction_is_keyword_only_and_side_is_checked() -> None:
    with pytest.raises(TypeError):
        Certificate(1.0, "m", "2", "upper", 0.0, True)  # type: ignore[misc]
    with pytest.raises(ValueError, match="side"):
        Certificate(value=1.0, method="m", norm="2", side="sideways", sound=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        Certificate(value=math.nan, method="m", norm="2", side="upper", sound=True)
    assert _certificate().seconds == 0.0


def test_tensors_are_recorded_and_saved_never_dropped(tmp_path) -> None:
    witness = torch.arange(5000, dtype=torch.float64)
    cert = _certificate(witness_tensor=witness, small=[1.0, 2.0], scalar=np.float32(0.5))
    data = cert.to_dict()
    assert data["side"] == "upper" and "kind" not in data
    assert "witness_tensor" not in data["details"]
    assert data["tensors"] == {"witness_tensor": {"shape": [5000], "dtype": "float64"}}
    assert data["details"]["small"] == [1.0, 2.0] and data["details"]["scalar"] == 0.5
    json.dumps(data)  # really JSON
    path = cert.save(tmp_path)
    saved = json.loads(path.read_text())
    assert saved["tensor_file"] == "certificate.safetensors"
    assert torch.equal(load_file(str(tmp_path / saved["tensor_file"]))["witness_tensor"], witness)


def test_non_json_values_raise_instead_of_vanishing() -> None:
    with pytest.raises(TypeError, match=r"details\['solver'\].*object"):
        _certificate(solver=object()).to_dict()
    nested = _certificate(info={"sdp": [np.array([1.0, 2.0])]}).to_dict()
    assert nested["details"]["info"] == {"sdp": [[1.0, 2.0]]}


def test_from_dict_round_trip_and_old_kind_key() -> None:
    cert = _certificate(regions=3)
    assert Certificate.from_dict(cert.to_dict()) == cert
    old = {**cert.to_dict(), "kind": "lower"}
    del old["side"]
    assert Certificate.from_dict(old).side == "lower"
    assert tightness(cert, 1.0) == 2.0 and tightness(cert, 0.0) == math.inf


def test_runner_stamps_registered_name_and_time(small_chain) -> None:
    cert = bounds.upper_bound(small_chain, "inf", "TRIVIAL")
    assert cert.method == "trivial" and cert.seconds > 0
    lower = bounds.lower_bound(small_chain, "1", "exact_regions")
    assert lower.method == "exact-regions"
    with pytest.raises(UnknownNameError, match="choose one of .*eclipse-fast"):
        bounds.upper_bound(small_chain, "2", "eclipse-slow")


def test_method_names_are_hyphenated_and_old_spellings_work() -> None:
    assert set(bounds.upper_methods()) == {
        "trivial",
        "eclipse-fast",
        "eclipse",
        "syed-hu",
        "lipsdp",
    }
    assert set(bounds.lower_methods()) == {"gradient", "sampled", "exact-regions", "milp"}
    for old in ("eclipse_fast", "syed_hu"):
        assert old in registry.UPPER_BOUNDS
    assert bounds.MethodNotApplicableError is MethodNotApplicableError
