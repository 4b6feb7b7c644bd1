"""Lower bounds on the Lipschitz constant from witnesses: ``‖J_f(x) v‖_p`` and secants.

Why any witness is a lower bound
--------------------------------
Let ``f: Rⁿ → Rᵐ`` be Lipschitz with constant ``L = Lip_p(f)`` in ``‖·‖_p → ‖·‖_p``. Where ``f``
is differentiable, ``J(x) v = lim_{h→0} (f(x + h v) − f(x)) / h``, hence

    ‖J(x) v‖_p ≤ L ‖v‖_p    for every x and v,    so    ‖J(x)‖_{p→p} ≤ L,

and for every pair ``x ≠ y`` the secant ratio ``‖f(x) − f(y)‖_p / ‖x − y‖_p ≤ L`` by definition.
Each evaluated pair ``(x, v)`` or ``(x, y)`` is a *witness*; the search maximises over witnesses
and reports the best one. Nothing about the search has to be right for the value to be valid:
only the final evaluation, which is done in float64 and deflated for rounding
(:mod:`~tightlip.bounds.lower.rounding`). The witness ``x`` is stored, so the value can be
re-checked independently.

For a piecewise-linear (PL) network the Jacobian at a point where an activation sits exactly on
a kink is whatever autograd returns; with the tightlip activations that is the Jacobian of an
adjacent linear piece (``relu'(0) = 0``, ``|·|'(0) = 0`` and ties of ``sort`` broken by index)
or a convex combination of them, whose norm is at most the largest norm of the adjacent pieces,
so it is still ``≤ L``.

The package
-----------
=================  ===========================================================================
``network``        the chain as the search evaluates it (one dtype, optional PL surrogates)
``jacobians``      Jacobian-vector products, full Jacobians, their operator norms at witnesses
``rounding``       the float64 deflation of reported values
``state``          the search state (clock, budget, generator, evaluations) and best witnesses
``options``        :class:`GradientOptions`, the search effort
``starts``         starting points, screened
``ascent``         joint ascent over ``(x, v)``, refinement, local search
``sign_search``    the first-layer sign search for ``|·|`` first layers (ℓ1 / ℓ∞)
``witness``        secant witnesses, witness details
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

__all__ = [
    "FULL_JACOBIAN_LIMIT",
    "RELATIVE_SLACK",
    "GradientOptions",
    "full_jacobian",
    "gradient_lower_bound",
    "jacobian_operator_norm",
    "matrix_norm_witness",
    "sampled_lower_bound",
]
