"""tightlip: train networks whose trivial Lipschitz bound is tight, certify them, prove it."""

from tightlip.bounds import lower_bound, upper_bound
from tightlip.certificate import Certificate, LayerBound, tightness
from tightlip.layers import Abs as Abs
from tightlip.layers import CReLU, GroupSort, Linear, MaxMin, ReLU, SinCos, SinPair, Tanh
from tightlip.model import LayerChain, ModelSpec, build_model, to_chain

__all__ = [
    "Abs",
    "CReLU",
    "Certificate",
    "GroupSort",
    "LayerBound",
    "LayerChain",
    "Linear",
    "MaxMin",
    "ModelSpec",
    "ReLU",
    "SinCos",
    "SinPair",
    "Tanh",
    "build_model",
    "lower_bound",
    "tightness",
    "to_chain",
    "upper_bound",
]
__version__ = "0.1.0"
