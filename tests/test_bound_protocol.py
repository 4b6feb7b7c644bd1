"""One protocol for every registered upper-bound method.

On each small network of ``conftest.PROTOCOL_CHAINS`` and in each norm, a method either returns
a sound certificate, ``value ≥`` a reference that is itself ``≤`` the true Lipschitz constant,
or refuses with a :class:`MethodNotApplicableError` that names it. The reference is the largest
of

* ``‖J(x)‖_{p→p}`` over 4000 points at several scales (dense Jacobians by autograd, through the
  layers' operators, so merged layers are evaluated as the original network), and
* for piecewise-linear networks without merged layers, the exact value from region enumeration
  (``exact-regions``, itself checked against brute force in ``test_soundness``).

Both are lower bounds on the true constant up to float64 rounding, hence the relative slack of
``1e-12`` (far below the margins the certificates carry, and far above rounding on these nets).
"""

from __future__ import annotations

import pytest
import torch
from conftest import PROTOCOL_CHAINS
from torch.func import jacrev, vmap

from tightlip.bounds import lower_bound, upper_bound, upper_methods
from tightlip.errors import MethodNotApplicableError
from tightlip.model import LayerChain
from tightlip.norms import NORMS, NormName

SLACK = 1e-12


def sampled_jacobian_norm(chain: LayerChain, norm: NormName, points: int = 4000) -> float:
    """``max ‖J(x)‖_{p→p}`` over Gaussian points at scales 0.1 … 10 (a lower bound on Lip)."""
    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.1, 1.0, 3.0, 10.0], dtype=torch.float64).repeat(points // 4)
    x = torch.randn(points, chain.input_dim, generator=generator, dtype=torch.float64)
    x = x * scales[:, None]
    jac = vmap(jacrev(lambda row: chain(row[None])[0]))(x)  # (N, m, n)
    if norm == "2":
        values = torch.linalg.matrix_norm(jac, ord=2)
    else:
        values = jac.abs().sum(dim=1 if norm == "1" else 2).amax(dim=-1)
    return float(values.max())


def reference_value(chain: LayerChain, norm: NormName) -> float:
    """The best lower reference described in the module docstring."""
    value = sampled_jacobian_norm(chain, norm)
    if chain.piecewise_linear and chain.exact:
        try:
            exact = lower_bound(chain, norm, "exact-regions")
        except MethodNotApplicableError:
            return value
        if exact.side == "exact":
            value = max(value, exact.value)
    return value


@pytest.fixture(scope="module")
def reference(protocol_chain: LayerChain) -> dict[str, float]:
    return {norm: reference_value(protocol_chain, norm) for norm in NORMS}


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("method", upper_methods())
def test_upper_bound_is_sound_or_refuses_clearly(
    method: str, norm: NormName, protocol_chain: LayerChain, reference: dict[str, float]
) -> None:
    try:
        cert = upper_bound(protocol_chain, norm, method)
    except MethodNotApplicableError as exc:
        message = str(exc)
        assert method in message or method.replace("-", "_") in message, message
        return
    assert cert.side == "upper" and cert.sound, cert
    assert cert.method == method and cert.norm == norm and cert.seconds > 0
    assert cert.value >= reference[norm] * (1 - SLACK), (cert.value, reference[norm])
    assert cert.to_dict()["side"] == "upper"


@pytest.mark.parametrize("method", upper_methods())
def test_every_upper_method_applies_to_some_network(method: str) -> None:
    """Refusing is allowed per network, not everywhere: each method certifies some ℓ2 case."""
    applied = []
    for name, build in sorted(PROTOCOL_CHAINS.items()):
        try:
            upper_bound(build(), "2", method)
        except MethodNotApplicableError:
            continue
        applied.append(name)
    assert {"relu-bias", "merged-relu"} <= set(applied), applied
