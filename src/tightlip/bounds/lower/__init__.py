"""Lower bounds on the Lipschitz constant from witnesses: ``‖J_f(x) v‖_p`` and secants.

Why a witness is a lower bound
------------------------------
Let ``f: Rⁿ → Rᵐ`` be Lipschitz with constant ``L = Lip_p(f)`` in ``‖·‖_p → ‖·‖_p``. For every
pair ``x ≠ y`` the secant ratio ``‖f(x) − f(y)‖_p / ‖x − y‖_p ≤ L`` by definition, and where
``f`` is differentiable ``J(x) v = lim_{h→0} (f(x + h v) − f(x)) / h``, hence
``‖J(x) v‖_p ≤ L ‖v‖_p``. The search maximises ``‖J(x) v‖`` with autograd; nothing about it has
to be right for the reported value to be valid, because the value is certified afresh from a
*witness* (:mod:`~tightlip.bounds.lower.witness`), evaluated in float64 with its rounding error
bounded (:mod:`~tightlip.bounds.lower.forward_error`):

* an *interior point* ``x`` of a piecewise-linear network, every pre-activation certified to lie
  strictly inside one linear piece (:mod:`~tightlip.bounds.lower.kinks`), so that ``f`` is affine
  on a ball around ``x`` and ``J(x)`` is exactly that piece's Jacobian; or
* a *secant pair* ``(x, y)``, sound for every network.

Autograd alone is not enough: at a kink it returns one subgradient, which need not be the
Jacobian of any neighbouring piece (for ``f(x) = [relu(x−1) − relu(1−x)] − [relu(x) − relu(−x)]
+ 1``, identically 0, it reports slope 1 at ``x = 0``), and bias-free networks have every unit on
a kink at ``x = 0``. A point that is not certified as interior is certified by secants around it
(smooth networks always are), which costs about 10⁻⁸ relative. The witness is stored in the
certificate's details and :func:`tightlip.bounds.check_lower` re-checks it.

The package
-----------
=================  ===========================================================================
``network``        the chain as the search evaluates it (one dtype, optional PL surrogates)
``jacobians``      Jacobian-vector products, full Jacobians, their operator norms at points
``forward_error``  the chain in float64 with an entrywise bound on its rounding error
``kinks``          interior points: the certified distance from every kink, the affine ball
``rounding``       the rounding margin of ``Ĵ v``; the slack of reported values
``state``          the search state (clock, budget, generator, evaluations) and best witnesses
``options``        :class:`GradientOptions`, the search effort
``starts``         starting points, screened
``ascent``         joint ascent over ``(x, v)``, refinement, local search
``sign_search``    the first-layer sign search for ``|·|`` first layers (ℓ1 / ℓ∞)
``witness``        interior-point and secant witnesses: certified, stored, re-certified
``gradient``       the registered ``gradient`` method
``sampled``        the registered ``sampled`` method
=================  ===========================================================================
"""

from tightlip.bounds.lower.gradient import gradient_lower_bound
from tightlip.bounds.lower.jacobians import (
    FULL_JACOBIAN_LIMIT,
    full_jacobian,
    jacobian_operator_norm,
    matrix_norm_witness,
)
from tightlip.bounds.lower.options import GradientOptions
from tightlip.bounds.lower.rounding import RELATIVE_SLACK
from tightlip.bounds.lower.sampled import sampled_lower_bound
from tightlip.bounds.lower.witness import WITNESS_KINDS, best_certified_witness, recertify

__all__ = [
    "FULL_JACOBIAN_LIMIT",
    "RELATIVE_SLACK",
    "WITNESS_KINDS",
    "GradientOptions",
    "best_certified_witness",
    "full_jacobian",
    "gradient_lower_bound",
    "jacobian_operator_norm",
    "matrix_norm_witness",
    "recertify",
    "sampled_lower_bound",
]
