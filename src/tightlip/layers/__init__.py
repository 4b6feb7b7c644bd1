"""Layers: bias-free linear maps and (poly)activations that describe themselves.

Every activation here is a ``torch.nn.Module`` that a user can drop into their own model, and
an :class:`Activation` that answers what the verifiers ask (its Lipschitz constant per norm
with the derivation in its docstring, slope bounds, its slope-restricted form, its linear
pieces, a smooth surrogate; see :mod:`tightlip.layers.activation`). One activation per
module; the registered ones are in :data:`ACTIVATIONS` (``make_activation("abs")``).

``Linear`` is ``nn.Linear``, bias-free by default and orthogonally initialised; ``Conv2d`` is
its convolutional analogue (delta-orthogonal). Feature maps: :class:`OnChannels` applies an
activation on channels (:mod:`tightlip.layers.channels`), and :mod:`tightlip.layers.pooling`
holds average and max pooling (the latter a nonlinear step with derived Lipschitz constants).
"""

from tightlip.layers.abs import Abs
from tightlip.layers.activation import (
    ACTIVATIONS,
    ONE_LIPSCHITZ,
    Activation,
    Surrogate,
    Temperature,
    as_activation,
    make_activation,
)
from tightlip.layers.channels import ChannelGroupSort, OnChannels
from tightlip.layers.clipped_relu import ClippedReLU
from tightlip.layers.conv import Conv2d
from tightlip.layers.crelu import CReLU
from tightlip.layers.groupsort import GroupSort, MaxMin
from tightlip.layers.leaky_relu import LeakyReLU
from tightlip.layers.linear import Linear
from tightlip.layers.pieces import ElementwisePieces, Pieces, SortedGroupPieces
from tightlip.layers.pooling import AvgPool2d, MaxPool2d, MaxPool2dActivation
from tightlip.layers.relu import ReLU
from tightlip.layers.sigmoid import Sigmoid
from tightlip.layers.sincos import SinCos
from tightlip.layers.sinpair import SinPair
from tightlip.layers.slope_form import ScalarPiece, SlopeForm
from tightlip.layers.tanh import Tanh

__all__ = [
    "ACTIVATIONS",
    "ONE_LIPSCHITZ",
    "Abs",
    "Activation",
    "AvgPool2d",
    "CReLU",
    "ChannelGroupSort",
    "ClippedReLU",
    "Conv2d",
    "ElementwisePieces",
    "GroupSort",
    "LeakyReLU",
    "Linear",
    "MaxMin",
    "MaxPool2d",
    "MaxPool2dActivation",
    "OnChannels",
    "Pieces",
    "ReLU",
    "ScalarPiece",
    "Sigmoid",
    "SinCos",
    "SinPair",
    "SlopeForm",
    "SortedGroupPieces",
    "Surrogate",
    "Tanh",
    "Temperature",
    "as_activation",
    "make_activation",
]
