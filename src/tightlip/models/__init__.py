"""Network families: tightlip's MLP and the baselines' models, each a registered model kind.

========== ======================================================================
mlp        bias-free Linear + polyactivations (:mod:`tightlip.model`, :mod:`.mlp`)
spec       the same from a convolutional ``arch`` (conv, pooling, dense; :mod:`.mlp`)
sandwich   Sandwich layers, Lip ≤ γ by construction (:mod:`.sandwich`); LBDN's conv nets
           of Fourier-domain Sandwich convolutions are ``sandwich-conv`` (:mod:`.sandwich_conv`)
local-lip  clipped-ReLU MLP with local Lipschitz bounds (:mod:`.local_lip`); its conv form
           is the kind ``local-lip-conv`` (:mod:`.local_lip_conv`)
plain      ReLU MLP (:mod:`.standard`)
specnorm   spectrally normalised ReLU MLP (:mod:`.standard`)
orthogonal orthogonal weights + MaxMin (:mod:`.standard`); the conv forms of these three are
           ``plain-conv``, ``specnorm-conv``, ``orthogonal-conv`` (:mod:`.standard_conv`)
gloro      MinMax net with biases, GloRo (:mod:`.gloro`)
normalized any of them behind a fixed per-channel input normalisation (:mod:`.normalized`)
========== ======================================================================

Importing this package registers every kind in :data:`MODEL_KINDS`.
"""

from tightlip.models import (  # noqa: F401  (registration)
    gloro,
    local_lip,
    local_lip_conv,
    mlp,
    normalized,
    sandwich,
    sandwich_conv,
    standard,
    standard_conv,
)
from tightlip.models.local_lip import LocalLipMLP
from tightlip.models.registry import MODEL_KINDS, build_from_description
from tightlip.models.sandwich import SandwichMLP
from tightlip.models.standard import BaselineMLP

__all__ = ["MODEL_KINDS", "BaselineMLP", "LocalLipMLP", "SandwichMLP", "build_from_description"]
