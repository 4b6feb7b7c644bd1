"""Witnesses: what a lower-bound certificate stores, and how each is certified in float64.

Two kinds of witness (``details["witness_kind"]``), each certified from the error-bounded
evaluation of :mod:`~tightlip.bounds.lower.forward_error`, never from autograd's answer:

* ``"secant"``: a pair ``x ≠ y``. By definition ``Lip_p(f) ≥ ‖f(x) − f(y)‖_p / ‖x − y‖_p`` for
  *any* network. With ``|f̂ − f| ≤ e`` entrywise at both points, the certified value is

      (‖f̂(x) − f̂(y)‖_p − ‖e(x) + e(y)‖_p) / ‖x − y‖_p,

  with the numerator's norms rounded down and up and the denominator's rounded up.
* ``"interior"``: a point ``x`` of a piecewise-linear network, certified to lie in the open
  region of one activation pattern (:mod:`~tightlip.bounds.lower.kinks`; ``f`` is affine on a
  ball of radius ``witness_radius``), and a direction ``v``. There ``J(x)`` is that region's
  Jacobian and ``‖J(x) v‖_p / ‖v‖_p ≤ Lip_p(f)``; ``‖Ĵ v‖`` is computed with the pieces' exact
  slopes and lowered by its rounding margin (:mod:`~tightlip.bounds.lower.rounding`).

At a point on a kink autograd reports one subgradient, which need not be the Jacobian of any
neighbouring piece (it can exceed ``Lip``); and a smooth network's Jacobian, though a lower
bound (``Lip = sup ‖J‖``), is computed with derivatives whose rounding we do not bound. Such a
point is certified through secants instead: ``f(x + t s)`` against ``f(x − t s)`` (and against
``f(x)``) along the top direction ``s ∝ v``, for decreasing ``t`` (:data:`SECANT_STEPS`). For a smooth ``f`` the
central secant differs from ``‖J(x) v‖`` by ``O(t²)`` and its rounding by ``O(u/t)``, so the best
step certifies ``‖J(x) v‖`` to about 10⁻⁸ relative.

Vectors with at most :data:`WITNESS_LIST_LIMIT` coordinates are stored in the details as lists
(exact: JSON writes the shortest repr of a float64); longer ones as float64 tensors, which
:class:`~tightlip.certificate.Certificate` writes to a safetensors file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tightlip.bounds.lower.forward_error import BoundedEvaluation, ErrorBoundedNetwork
from tightlip.bounds.lower.jacobians import jacobian_operator_norm
from tightlip.bounds.lower.kinks import interior_radii
from tightlip.bounds.lower.rounding import rounding_margin
from tightlip.model import LayerChain
from tightlip.norms import UNIT_ROUNDOFF, NormName, gamma, vector_norm

#: witness vectors with at most this many coordinates are stored as lists in the details
WITNESS_LIST_LIMIT = 1024
#: the central secants' half-steps ``t``, relative to ``max(‖x‖₂, 1)`` (1 down to 10⁻⁸)
SECANT_STEPS = tuple(10.0 ** (-k / 2) for k in range(17))
#: witness kinds as stored in ``details["witness_kind"]``
WITNESS_KINDS = ("interior", "secant")


def secant_values(
    network: ErrorBoundedNetwork, x: torch.Tensor, y: torch.Tensor, norm: NormName
) -> torch.Tensor:
    """Certified ``‖f(x_b) − f(y_b)‖_p / ‖x_b − y_b‖_p`` row-wise (module docstring); 0 where
    ``x_b = y_b`` or the evaluation is not finite."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    return certified_secants(network(x), network(y), x, y, norm)


def certified_secants(
    at_x: BoundedEvaluation,
    at_y: BoundedEvaluation,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: NormName,
) -> torch.Tensor:
    """:func:`secant_values` from the error-bounded evaluations at ``x`` and ``y``."""
    m, n = at_x.output.shape[-1], x.shape[-1]
    gap = vector_norm(at_x.output - at_y.output, norm) * (1.0 - gamma(m + 4))
    error = vector_norm(at_x.output_error + at_y.output_error, norm) * (1.0 + gamma(m + 4))
    distance = vector_norm(x - y, norm) * (1.0 + gamma(n + 4))
    numerator = (gap - error).clamp_min(0.0)
    ratio = numerator / torch.where(distance > 0, distance, torch.ones_like(distance))
    ratio = ratio * (1.0 - 8.0 * UNIT_ROUNDOFF)
    ratio = torch.where(distance > 0, ratio, torch.zeros_like(ratio))
    return torch.nan_to_num(ratio, nan=0.0, posinf=0.0, neginf=0.0)


def interior_values(
    network: ErrorBoundedNetwork, x: torch.Tensor, v: torch.Tensor, norm: NormName
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(certified ‖J(x_b) v_b‖_p / ‖v_b‖_p, radius of the affine ball)`` row-wise; both 0 where
    ``x_b`` is not certified to be an interior point (module docstring)."""
    x, v = x.to(torch.float64), v.to(torch.float64)
    evaluation = network(x, tangent=v)
    chain = network.chain
    radii = interior_radii(chain, evaluation, norm)
    if not bool((radii > 0).any()):
        return torch.zeros_like(radii), radii
    tangent = evaluation.tangent
    if tangent is None:  # a tangent was passed, so the evaluation carries it
        raise RuntimeError("the error-bounded evaluation returned no tangent")
    m, n = tangent.shape[-1], x.shape[-1]
    direction = vector_norm(v, norm) * (1.0 + gamma(n + 4))
    product = vector_norm(tangent, norm) * (1.0 - gamma(m + 4))
    numerator = (product - rounding_margin(chain, norm) * direction).clamp_min(0.0)
    value = numerator / torch.where(direction > 0, direction, torch.ones_like(direction))
    value = value * (1.0 - 8.0 * UNIT_ROUNDOFF)
    value = torch.where((radii > 0) & (direction > 0), value, torch.zeros_like(value))
    return torch.nan_to_num(value, nan=0.0, posinf=0.0, neginf=0.0), radii


def secant_points(x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The points around the candidates and the pairs that the secants are taken over.

    Points: the candidates ``x_b``, the origin, and ``x_b ± t s_b`` for every step ``t`` of
    :data:`SECANT_STEPS`, with ``s_b = v_b max(‖x_b‖₂, 1) / ‖v_b‖₂``. Pairs (rows of indices
    into the points, with the candidate each belongs to): ``(x + t s, x − t s)`` (central),
    ``(x, x ± t s)`` (one-sided: a long one may cross into a steeper region) and ``(x, 0)``.
    Returns ``(points, pairs)``, ``pairs`` of shape ``(P, 3)``: first, second, candidate.
    """
    x, v = x.to(torch.float64), v.to(torch.float64)
    batch, n = x.shape
    length = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    scale = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1.0)
    s = v * scale / torch.where(length > 0, length, torch.ones_like(length))
    steps = torch.tensor(SECANT_STEPS, dtype=torch.float64).reshape(1, -1, 1)
    plus = (x.unsqueeze(1) + steps * s.unsqueeze(1)).reshape(-1, n)
    minus = (x.unsqueeze(1) - steps * s.unsqueeze(1)).reshape(-1, n)
    points = torch.cat([x, torch.zeros(1, n, dtype=torch.float64), plus, minus])
    k = len(SECANT_STEPS)
    rows = torch.arange(batch).repeat_interleave(k)
    centre = rows
    first_plus = batch + 1 + torch.arange(batch * k)
    first_minus = first_plus + batch * k
    origin = torch.full((batch,), batch)
    pairs = torch.cat(
        [
            torch.stack([first_plus, first_minus, rows], dim=1),
            torch.stack([centre, first_plus, rows], dim=1),
            torch.stack([centre, first_minus, rows], dim=1),
            torch.stack([torch.arange(batch), origin, torch.arange(batch)], dim=1),
        ]
    )
    return points, pairs


@dataclass(frozen=True)
class CertifiedWitness:
    """A witness and the value it certifies (module docstring).

    ``kind``: ``"interior"`` (``other`` is the direction ``v``, ``radius`` the affine ball) or
    ``"secant"`` (``other`` is the second point ``y``). ``row``: which candidate it came from.
    """

    kind: str
    value: float
    x: torch.Tensor
    other: torch.Tensor
    radius: float | None = None
    row: int = 0

    def details(self) -> dict[str, Any]:
        """The witness as certificate details (vectors as lists or tensors, module docstring)."""
        partner = "witness_direction" if self.kind == "interior" else "witness_pair"
        details: dict[str, Any] = {
            "witness_kind": self.kind,
            "witness_value": self.value,
            "witness": stored_vector(self.x),
            partner: stored_vector(self.other),
        }
        if self.radius is not None:
            details["witness_radius"] = self.radius
        return details


@dataclass(frozen=True)
class WitnessChoice:
    """The best certified witness among candidates, and the best value of each kind."""

    best: CertifiedWitness
    interior_value: float
    secant_value: float


def best_certified_witness(
    chain: LayerChain, x: torch.Tensor, v: torch.Tensor, norm: NormName
) -> WitnessChoice:
    """Certify the candidates ``(x_b, v_b)`` as interior points and by secants around them
    (module docstring); the witness with the largest certified value wins (interior on ties).
    """
    network = ErrorBoundedNetwork(chain)
    x, v = x.detach().to(torch.float64), v.detach().to(torch.float64)
    interior, radii = interior_values(network, x, v, norm)
    points, pairs = secant_points(x, v)
    at = network(points)
    first, second = pairs[:, 0], pairs[:, 1]
    secants = certified_secants(
        _rows(at, first), _rows(at, second), points[first], points[second], norm
    )
    i, j = int(interior.argmax()), int(secants.argmax())
    interior_value, secant_value = float(interior[i]), float(secants[j])
    if interior_value >= secant_value and interior_value > 0:
        best = CertifiedWitness("interior", interior_value, x[i], v[i], float(radii[i]), i)
    else:
        a, b, row = (int(t) for t in pairs[j])
        best = CertifiedWitness("secant", secant_value, points[a], points[b], None, row)
    return WitnessChoice(best, interior_value, secant_value)


def _rows(evaluation: BoundedEvaluation, index: torch.Tensor) -> BoundedEvaluation:
    """The rows ``index`` of an evaluation's output and output error (all a secant needs)."""
    return BoundedEvaluation(evaluation.output[index], evaluation.output_error[index], (), ())


def recertify(chain: LayerChain, norm: NormName, details: dict[str, Any]) -> float:
    """The value a stored witness certifies, recomputed (:func:`tightlip.bounds.check_lower`).

    ``details``: a certificate's details with its tensors. A witness without a kind (exact
    region enumeration, MILP, older certificates) is a point: it is certified as an interior
    point along its Jacobian's top direction, else by secants around it.
    """
    network = ErrorBoundedNetwork(chain)
    kind = details.get("witness_kind")
    x = read_vector(details, "witness")
    if kind == "secant":
        y = read_vector(details, "witness_pair")
        return float(secant_values(network, x[None], y[None], norm)[0])
    if kind == "interior":
        v = read_vector(details, "witness_direction")
        return float(interior_values(network, x[None], v[None], norm)[0][0])
    _, v = jacobian_operator_norm(chain, x[None], norm, return_directions=True)
    return best_certified_witness(chain, x[None], v, norm).best.value


def stored_vector(vector: torch.Tensor) -> list[float] | torch.Tensor:
    """A witness vector as details store it: a list, or a float64 tensor when long."""
    flat = vector.detach().to(torch.float64).reshape(-1)
    if flat.numel() > WITNESS_LIST_LIMIT:
        return flat.clone()
    return [float(t) for t in flat]


def read_vector(details: dict[str, Any], key: str) -> torch.Tensor:
    """The stored vector ``details[key]`` (list or tensor; older certificates: ``key_tensor``)."""
    value = details.get(key)
    if value is None:
        value = details.get(f"{key}_tensor")
    if value is None:
        raise KeyError(key)
    return torch.as_tensor(value, dtype=torch.float64).reshape(-1)
