"""Training methods, each one :class:`~tightlip.methods.registry.Method` in :data:`METHODS`.

========== ===================================================================================
tightlip   penalised trivial bound, bias-free layers, polyactivations (Kuang et al. 2026)
sandwich   Sandwich layers (Wang & Manchester, ICML 2023), Lip ≤ γ by construction
local-lip  clipped-ReLU MLP, local Lipschitz bounds (Huang et al., NeurIPS 2021), GloRo loss
plain      ReLU MLP, cross-entropy, best available verifier
specnorm   spectral normalisation (Miyato et al. 2018), trivial bound of the actual weights
orthogonal orthogonal weights + MaxMin (Anil et al. 2019)
gloro      MinMax net with biases, GloRo loss (Leino, Wang & Fredrikson, ICML 2021)
========== ===================================================================================

Importing this package registers every method. How each departs from its paper is in its
``Method.deviations``.
"""

from tightlip.methods import gloro, local_lip, sandwich, standard, tightlip  # noqa: F401  (registration)
from tightlip.methods.fit import fit
from tightlip.methods.registry import METHODS, Method

__all__ = ["METHODS", "Method", "fit"]
