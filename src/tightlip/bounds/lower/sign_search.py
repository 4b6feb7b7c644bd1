"""The first-layer sign search: exact or alternating choice of first-layer signs (ℓ1 / ℓ∞).

Gradient ascent cannot change which side of a kink a first-layer unit is on without crossing
a region boundary, and for ℓ1 / ℓ∞ the best pattern of an ``|W₁x|`` first layer is a
combinatorial choice. When the first activation states ``sign_jacobian`` (it is ``|·|``), every
sign pattern is reachable without changing ``|W₁x|``, and the best signs are found exactly or by
the Hölder alternation (Boyd 1974); see :func:`first_layer_sign_search`.
"""

from __future__ import annotations

from itertools import product

import torch

from tightlip.bounds.lower.jacobians import JACOBIAN_ELEMENTS, exact_norms, full_jacobian, unit_sign
from tightlip.bounds.lower.network import SearchNetwork
from tightlip.bounds.lower.state import Best, SearchState
from tightlip.model import AffineStep
from tightlip.norms import NormName


def first_layer_sign_search(
    net: SearchNetwork, x: torch.Tensor, norm: NormName, iterations: int = 30
) -> torch.Tensor | None:
    """New candidate witnesses that re-choose the signs of the first layer (ℓ1 / ℓ∞).

    Applies when the first activation states ``sign_jacobian`` (σ = ``|·|``:
    ``σ(s ⊙ a) = a`` for ``a ≥ 0``, ``J_σ(z) = diag(sign z)``). For ``f(x) = g(|W₁ x|)`` without biases and with ``W₁`` (h × n) of full row rank ``h ≤ n``,
    every sign pattern ``s ∈ {±1}^h`` is realised *without changing* ``a = |W₁ x|``:
    ``x' = x + W₁⁺ (s ⊙ a − W₁ x)`` has ``W₁ x' = s ⊙ a``. Then ``J(x') = M diag(s) W₁`` with
    ``M = J_g(a)`` fixed, and the first-layer signs can be optimised exactly or by the Hölder
    alternation (Boyd 1974), neither of which gradient ascent on ``x`` does (``J`` is piecewise
    constant):

    * ℓ∞: for each output row i, ``max_{s, t ∈ {±1}} Σ_l M_il s_l (W₁ t)_l``, alternating
      ``t = sign(W₁ᵀ (M_i ⊙ s))`` and ``s = sign(M_i ⊙ W₁ t)`` from the current signs (never
      decreasing);
    * ℓ1: for each input column j, ``max_s ‖M (s ⊙ W₁e_j)‖₁ = max_{u ∈ {±1}^m} |Mᵀu|ᵀ |W₁e_j|``,
      exact by enumerating u when ``m ≤ 12`` (else the same alternation).

    Returns one candidate per row of ``x`` (its best row / column), or ``None`` when the network
    is not of this form. The candidates are only proposals: the caller evaluates the true
    ``‖J(x')‖`` (``W₁ W₁⁺ = I`` holds up to rounding, which may flip a tiny pre-activation).
    """
    chain = net.chain
    if norm not in ("1", "inf") or chain.has_bias or len(chain.steps) < 3:
        return None
    first, activation = chain.steps[0], chain.steps[1]
    if not isinstance(first, AffineStep) or not activation.activation.sign_jacobian:
        return None
    if first.out_features > first.in_features:  # before forming a (possibly large) matrix
        return None
    w1 = first.weight.to(torch.float64)
    h, n = w1.shape
    if h > n or torch.linalg.matrix_rank(w1) < h:
        return None
    x = x.to(torch.float64)
    pre = x @ w1.T
    a = pre.abs()
    signs = unit_sign(pre)
    tail = net.tail(2)
    with torch.no_grad():
        outer = full_jacobian(tail, a, net.output_dim, net.widest)  # (B, m, h): M = J_g(a)
    batch, m, _ = outer.shape
    if norm == "inf":
        s = signs.unsqueeze(1).expand(batch, m, h).clone()  # one sign vector per output row
        for _ in range(iterations):
            t = unit_sign(torch.einsum("bml,ln->bmn", outer * s, w1))
            s_new = unit_sign(outer * (t @ w1.T))
            if torch.equal(s_new, s):
                break
            s = s_new
        values = torch.einsum("bml,ln->bmn", outer * s, w1).abs().sum(-1)  # (B, m)
        chosen = s[torch.arange(batch), values.argmax(-1)]
    else:
        if m <= 12:
            u = torch.tensor(list(product((-1.0, 1.0), repeat=m)), dtype=torch.float64)
            mu = torch.einsum("um,bml->bul", u, outer)  # (B, U, h)
            values = mu.abs() @ w1.abs()  # (B, U, n)
            flat = values.flatten(1).argmax(-1)
            best_u, best_j = flat // n, flat % n
            rows = torch.arange(batch)
            chosen = unit_sign(mu[rows, best_u] * w1[:, best_j].T)
        else:
            column = w1.T.unsqueeze(0)  # (1, n, h)
            s = signs.unsqueeze(1).expand(batch, n, h).clone()
            for _ in range(iterations):
                u = unit_sign(torch.einsum("bml,bnl->bnm", outer, s * column))
                s_new = unit_sign(column * torch.einsum("bml,bnm->bnl", outer, u))
                if torch.equal(s_new, s):
                    break
                s = s_new
            values = torch.einsum("bml,bnl->bnm", outer, s * column).abs().sum(-1)  # (B, n)
            chosen = s[torch.arange(batch), values.argmax(-1)]
    shift = torch.linalg.lstsq(w1, (chosen * a - pre).T).solution.T  # min-norm W₁⁺ (…)
    return x + shift


def sign_search_phase(
    net64: SearchNetwork,
    best: Best,
    x0: torch.Tensor,
    norm: NormName,
    extra: int,
    state: SearchState,
    chunk: int = 64,
) -> float | None:
    """Run :func:`first_layer_sign_search` from the best points, the starts and ``extra``
    Gaussian points, in chunks while time is left; every proposal is evaluated on the true
    network and may replace the best witness of its chunk. Returns the best value found."""
    top = best.top(min(16, best.x.shape[0]))
    pool = torch.cat(
        [
            best.x[top].to(torch.float64),
            x0.to(torch.float64),
            torch.randn(extra, net64.input_dim, generator=state.generator, dtype=torch.float64),
        ]
    )
    if norm == "1" and net64.output_dim <= 12:  # the enumeration holds (B, 2^m, n) values
        chunk = max(1, min(chunk, JACOBIAN_ELEMENTS * 4 // (2**net64.output_dim * net64.input_dim)))
    found = None
    for start in range(0, pool.shape[0], chunk):
        if state.out_of_time():
            break
        proposals = first_layer_sign_search(net64, pool[start : start + chunk], norm)
        if proposals is None:
            return None
        exact = exact_norms(net64, proposals, norm)
        if exact is None:
            return None
        state.count(proposals.shape[0])
        k = int(torch.nan_to_num(exact[0], nan=-1.0).argmax())
        value = float(exact[0][k])
        found = value if found is None else max(found, value)
        weakest = int(best.value.argmin())
        if value > float(best.value[weakest]):
            best.replace(weakest, proposals[k], exact[1][k], value)
    return found
