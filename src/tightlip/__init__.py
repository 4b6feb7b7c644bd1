"""tightlip: train networks whose trivial Lipschitz bound is tight, certify them, prove it."""

from typing import Any

from tightlip.bounds import check_lower, lower_bound, upper_bound
from tightlip.certificate import Certificate, LayerBound, tightness
from tightlip.layers import Abs as Abs
from tightlip.layers import (
    CReLU,
    GroupSort,
    LeakyReLU,
    Linear,
    MaxMin,
    ReLU,
    Sigmoid,
    SinCos,
    SinPair,
    Tanh,
)
from tightlip.model import LayerChain, ModelSpec, build_model, to_chain

__all__ = [
    "Abs",
    "CReLU",
    "Certificate",
    "GroupSort",
    "LayerBound",
    "LayerChain",
    "LeakyReLU",
    "Linear",
    "MaxMin",
    "ModelSpec",
    "ReLU",
    "Sigmoid",
    "SinCos",
    "SinPair",
    "Tanh",
    "build_model",
    "check_lower",
    "load_model",
    "lower_bound",
    "tightness",
    "to_chain",
    "upper_bound",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``load_model`` on first use (reading ONNX needs ``onnx``, which loads slowly)."""
    if name == "load_model":
        from tightlip.interop.load import load_model

        return load_model
    raise AttributeError(f"module 'tightlip' has no attribute {name!r}")
