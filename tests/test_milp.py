"""The exact-value MILP never crashes on what HiGHS returns, and says what it proved.

HiGHS can stop without a dual bound: "optimal" from presolve or a heuristic with
``mip_dual_bound = None`` (this crashed with ``float(None)``), or a time limit with or without
an incumbent. Whatever it returns, the certificate's value is a verified witness (``sound``),
at most the true constant; ``side == "exact"`` only when optimality was proved; the solver
status and the gap are in the details.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.optimize
import torch

import tightlip
from tightlip import lower_bound, upper_bound
from tightlip.bounds import milp
from tightlip.bounds.exact import exact_lipschitz_by_regions
from tightlip.model import ActivationStep, AffineStep, LayerChain


def make_chain(dims: tuple[int, ...], seed: int, bias: bool = False) -> LayerChain:
    rng = np.random.default_rng(seed)
    steps: list[AffineStep | ActivationStep] = []
    for i, (fan_in, width) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        w = torch.from_numpy(rng.standard_normal((width, fan_in)) / math.sqrt(fan_in))
        b = torch.from_numpy(rng.standard_normal(width) * 0.5) if bias else None
        steps.append(AffineStep(w, b, name=f"fc{i}"))
        if i < len(dims) - 2:
            steps.append(ActivationStep(tightlip.ReLU(), name=f"relu{i}"))
    return LayerChain(tuple(steps))


def _patched_solve(
    monkeypatch: pytest.MonkeyPatch, edit: Any
) -> list[scipy.optimize.OptimizeResult]:
    """Run the real HiGHS solve, then let ``edit`` change the result (what HiGHS may return)."""
    real = milp._Program.solve
    seen: list[scipy.optimize.OptimizeResult] = []

    def solve(self: milp._Program, *args: Any, **kwargs: Any) -> Any:
        res = real(self, *args, **kwargs)
        edit(res)
        seen.append(res)
        return res

    monkeypatch.setattr(milp._Program, "solve", solve)
    return seen


def _check_sound(cert: Any, chain: LayerChain, norm: str) -> None:
    assert cert.sound and cert.side in ("exact", "lower")
    assert 0.0 <= cert.value <= exact_lipschitz_by_regions(chain, norm) * (1 + 1e-9)
    assert cert.value <= cert.details["upper"]
    assert cert.details["solver_status"]
    assert cert.details["gap"] >= 0.0


@pytest.mark.parametrize("norm", ["1", "inf"])
def test_optimal_without_a_dual_bound_does_not_crash(
    monkeypatch: pytest.MonkeyPatch, norm: str
) -> None:
    chain = make_chain((2, 5, 4, 2), seed=3)

    def drop_dual(res: Any) -> None:
        res["mip_dual_bound"] = None

    seen = _patched_solve(monkeypatch, drop_dual)
    cert = lower_bound(chain, norm, "milp", time_limit=20)
    assert any(r.status == 0 for r in seen)
    _check_sound(cert, chain, norm)
    assert cert.details["solver_status"] == "optimal" and cert.details["complete"]
    # the bound HiGHS's optimality guarantees (relative or absolute gap) stands in for it
    assert math.isfinite(cert.details["upper"])
    assert cert.details["upper"] >= cert.value


@pytest.mark.parametrize("keep_incumbent", [True, False])
def test_time_limit_without_a_dual_bound_returns_a_lower_bound(
    monkeypatch: pytest.MonkeyPatch, keep_incumbent: bool
) -> None:
    chain = make_chain((2, 5, 4, 2), seed=4)

    def time_out(res: Any) -> None:
        if res.status == 0:
            res["status"], res["mip_dual_bound"] = 1, None
            if not keep_incumbent:
                res["x"], res["fun"] = None, None

    _patched_solve(monkeypatch, time_out)
    cert = lower_bound(chain, "inf", "milp", time_limit=20)
    _check_sound(cert, chain, "inf")
    assert cert.side == "lower" and not cert.details["exact_on_domain"]
    assert cert.details["solver_status"] == "time or iteration limit"
    assert cert.details["upper"] == math.inf and cert.details["gap"] == math.inf
    assert not cert.details["complete"]
    if keep_incumbent:  # the incumbents' patterns are realised and verified
        assert cert.value > 0 and cert.details["witness"] is not None


def test_the_network_that_crashed() -> None:
    """A biased 1 → 2 → 3 ReLU net on which HiGHS reported "optimal" without a dual bound."""
    rng = np.random.default_rng(126)
    steps: list[AffineStep | ActivationStep] = []
    fan_in = 1
    for i, width in enumerate((2, 3)):
        w = rng.standard_normal((width, fan_in)) / math.sqrt(fan_in)
        b = torch.from_numpy(rng.standard_normal(width) * 0.5)
        steps.append(AffineStep(torch.from_numpy(w), b, name=f"fc{i}"))
        if i == 0:
            steps.append(ActivationStep(tightlip.ReLU(), name="relu"))
            fan_in = width
    chain = LayerChain(tuple(steps))
    cert = lower_bound(chain, "inf", "milp", time_limit=2.0)
    _check_sound(cert, chain, "inf")


@pytest.mark.parametrize("norm", ["1", "inf"])
def test_tiny_time_limit(norm: str) -> None:
    chain = make_chain((3, 10, 10, 2), seed=5, bias=True)
    cert = lower_bound(chain, norm, "milp", time_limit=1e-4)
    assert cert.sound and cert.side == "lower"  # biased: never more than a lower bound
    assert cert.value <= upper_bound(chain, norm, "trivial").value
    if not cert.details["complete"]:
        assert cert.details["solver_status"] != "optimal"
        assert cert.details["upper"] == math.inf
