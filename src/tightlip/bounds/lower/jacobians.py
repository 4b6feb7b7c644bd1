"""Jacobians of the network and their operator norms, each evaluated at an explicit witness.

* ``p = 2``: ``σ_max(J)``; we take the top right singular vector ``v`` of the full Jacobian (or a
  power-iteration vector when both dimensions are large) and report ``‖J v‖₂`` for that unit
  ``v``: an exact evaluation of a witness, never above ``σ_max``.
* ``p = 1``: ``max_j Σ_i |J_ij|``, attained at ``v = e_j``;
* ``p = ∞``: ``max_i Σ_j |J_ij|``, attained at ``v = sign(J_i,:)``.

``J(x) v`` is one forward-mode product (``jvp``); the full Jacobian is ``m`` reverse products
(``vmap`` over ``vjp``) or ``n`` forward ones, whichever is fewer. The Hölder power method
(Boyd 1974; Higham, *Accuracy and Stability of Numerical Algorithms*, Alg. 15.1) updates ``v`` by
:func:`dual_direction`.
"""

from __future__ import annotations

import torch
from torch.func import jvp, vjp, vmap

from tightlip.bounds.lower.network import RowFunction, SearchNetwork
from tightlip.model import LayerChain
from tightlip.norms import NormName, parse_norm, vector_norm

#: form the full Jacobian when ``min(m, n)`` is at most this (else power iteration for p = 2)
FULL_JACOBIAN_LIMIT = 512
#: a budget for batched full Jacobians: rows × min(m, n) × widest layer, in elements
JACOBIAN_ELEMENTS = 2**22


def jacobian_vector(fn: RowFunction, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Row-wise ``J(x_b) v_b`` by one forward-mode product (the network acts row by row)."""
    return jvp(fn, (x,), (v,))[1]


def full_jacobian(
    fn: RowFunction, x: torch.Tensor, output_dim: int | None = None, widest: int | None = None
) -> torch.Tensor:
    """The Jacobians ``J(x_b)`` of a row-wise function, shape ``(B, m, n)``.

    Uses ``m`` reverse products (``vmap`` over ``vjp``) when ``m ≤ n``, else ``n`` forward
    products, in batch chunks that keep memory bounded.
    """
    batch, n = x.shape
    m = output_dim if output_dim is not None else fn(x[:1]).shape[-1]
    small = min(m, n)
    chunk = max(1, JACOBIAN_ELEMENTS // max(1, small * max(widest or n, n, m)))
    pieces = []
    for start in range(0, batch, chunk):
        xs = x[start : start + chunk]
        rows = xs.shape[0]
        if m <= n:
            _, pullback = vjp(fn, xs)
            basis = torch.eye(m, dtype=x.dtype).unsqueeze(1).expand(m, rows, m)
            (jac,) = vmap(pullback)(basis)  # (m, rows, n)
            pieces.append(jac.permute(1, 0, 2))
        else:
            basis = torch.eye(n, dtype=x.dtype).unsqueeze(1).expand(n, rows, n)
            cols = vmap(lambda t, xs=xs: jvp(fn, (xs,), (t,))[1])(basis)  # (n, rows, m)
            pieces.append(cols.permute(1, 2, 0))
    return torch.cat(pieces, dim=0)


def matrix_norm_witness(jac: torch.Tensor, norm: NormName) -> tuple[torch.Tensor, torch.Tensor]:
    """``(‖J_b v_b‖_p, v_b)`` with ``‖v_b‖_p = 1`` the maximiser, for a batch ``(B, m, n)``.

    p = 2: ``v`` the top right singular vector; p = 1: ``e_j`` for the largest column
    abs-sum; p = ∞: ``sign`` of the row with the largest abs-sum. The value is recomputed as
    ``‖J v‖_p`` so that it is an evaluation of an explicit witness.
    """
    batch, _, n = jac.shape
    if norm == "2":
        v = top_right_singular_vector(jac)
    elif norm == "1":
        column = jac.abs().sum(dim=1).argmax(dim=-1)
        v = torch.zeros(batch, n, dtype=jac.dtype)
        v[torch.arange(batch), column] = 1.0
    else:
        row = jac.abs().sum(dim=2).argmax(dim=-1)
        v = unit_sign(jac[torch.arange(batch), row, :])
    values = vector_norm(torch.einsum("bmn,bn->bm", jac, v), norm)
    return values, v


def top_right_singular_vector(jac: torch.Tensor) -> torch.Tensor:
    """A unit ``v_b`` near the top right singular vector of each ``J_b`` in a batch ``(B, m, n)``.

    The top eigenvector of the smaller Gram matrix (much faster than a batched SVD of a wide
    matrix). Each ``J_b`` is first divided by its largest entry, so a saturated activation's
    tiny Jacobian (entries near 1e-300, whose Gram underflows into subnormals) does not make
    LAPACK's eigensolver fail; if it fails anyway the batch is solved one matrix at a time, by
    SVD where ``eigh`` fails. ``v`` only has to be good: the caller re-evaluates ``‖J v‖``.
    """
    scale = jac.abs().amax(dim=(1, 2), keepdim=True)
    scaled = jac / torch.where(scale > 0, scale, torch.ones_like(scale))
    wide = scaled.shape[1] <= scaled.shape[2]
    gram = scaled @ scaled.transpose(1, 2) if wide else scaled.transpose(1, 2) @ scaled
    top = _top_eigenvectors(gram)
    v = torch.einsum("bmn,bm->bn", scaled, top) if wide else top
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(1e-300)


def _top_eigenvectors(gram: torch.Tensor) -> torch.Tensor:
    """The top eigenvector of each symmetric ``(B, k, k)`` matrix (batched ``eigh``, with
    a per-matrix fallback to ``eigh`` then SVD when LAPACK reports non-convergence)."""
    try:
        return torch.linalg.eigh(gram)[1][:, :, -1]
    except torch.linalg.LinAlgError:
        return torch.stack([_top_eigenvector(g) for g in gram])


def _top_eigenvector(gram: torch.Tensor) -> torch.Tensor:
    if not bool(torch.isfinite(gram).all()):  # no direction to find; e_1 is still a unit witness
        return torch.nn.functional.one_hot(torch.tensor(0), gram.shape[0]).to(gram.dtype)
    try:
        return torch.linalg.eigh(gram)[1][:, -1]
    except torch.linalg.LinAlgError:
        return torch.linalg.svd(gram)[0][:, 0]


def unit_sign(g: torch.Tensor) -> torch.Tensor:
    """``sign`` with ``sign(0) = 1`` (a vector of ±1, unit in ℓ∞)."""
    return torch.where(g >= 0, torch.ones_like(g), -torch.ones_like(g))


def dual_direction(g: torch.Tensor, norm: NormName) -> torch.Tensor:
    """``argmax_{‖w‖_p ≤ 1} gᵀ w`` row-wise: the Hölder power-method update of ``v``."""
    if norm == "2":
        return g / torch.linalg.vector_norm(g, dim=-1, keepdim=True).clamp_min(1e-30)
    if norm == "1":
        index = g.abs().argmax(dim=-1)
        v = torch.zeros_like(g)
        rows = torch.arange(g.shape[0])
        v[rows, index] = unit_sign(g[rows, index])
        return v
    return unit_sign(g)


def random_direction(
    batch: int, n: int, norm: NormName, generator: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    g = torch.randn(batch, n, generator=generator, dtype=torch.float64).to(dtype)
    return dual_direction(g, norm)


def jacobian_operator_norm(
    chain_or_fn: LayerChain | RowFunction,
    x: torch.Tensor,
    norm: NormName | str = "2",
    *,
    iterations: int = 200,
    seed: int = 0,
    return_directions: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``‖J_f(x_b)‖_{p→p}`` for each row of ``x`` (shape ``(B, n)``), in float64.

    ``chain_or_fn`` is a :class:`LayerChain` or a function that maps a batch ``(B, n)`` to
    ``(B, m)`` row by row (row ``b`` of the output depends on row ``b`` of the input only).

    p = 1 and p = ∞ are exact (full Jacobian, max column / row abs-sum). For p = 2 the full
    Jacobian and its SVD are used when ``min(m, n) ≤ FULL_JACOBIAN_LIMIT``; otherwise power
    iteration on ``JᵀJ`` (``iterations`` steps of one ``jvp`` and one ``vjp``). Either way the
    returned value is ``‖J v‖₂`` for an explicit unit vector ``v``: never above the true norm
    beyond rounding. With ``return_directions`` the maximising ``v`` (one per row) is returned.
    """
    norm = parse_norm(norm)
    widest = None
    if isinstance(chain_or_fn, LayerChain):
        network = SearchNetwork(chain_or_fn, torch.float64)
        fn, widest = network.function(), network.widest
        x = chain_or_fn.check_input(x)
    else:
        fn = chain_or_fn
    x = x.detach().to(torch.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a batch of shape (B, n), got {tuple(x.shape)}")
    with torch.no_grad():
        m = fn(x[:1]).shape[-1]
    n = x.shape[1]
    if norm != "2" or min(m, n) <= FULL_JACOBIAN_LIMIT:
        with torch.no_grad():
            values, v = matrix_norm_witness(full_jacobian(fn, x, m, widest), norm)
    else:
        values, v = power_iteration(fn, x, iterations, seed)
    return (values, v) if return_directions else values


def power_iteration(
    fn: RowFunction, x: torch.Tensor, iterations: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise power iteration on ``J(x)ᵀ J(x)``; returns ``(‖J v‖₂, v)`` for the last ``v``."""
    generator = torch.Generator().manual_seed(seed)
    v = random_direction(x.shape[0], x.shape[1], "2", generator, x.dtype)
    previous = torch.zeros(x.shape[0], dtype=x.dtype)
    with torch.no_grad():
        for _ in range(iterations):
            y = jacobian_vector(fn, x, v)
            value = torch.linalg.vector_norm(y, dim=-1)
            u = y / value.clamp_min(1e-300).unsqueeze(-1)
            _, pullback = vjp(fn, x)
            (g,) = pullback(u)
            v = dual_direction(g, "2")
            if torch.all((value - previous).abs() <= 1e-13 * value):
                break
            previous = value
        values = torch.linalg.vector_norm(jacobian_vector(fn, x, v), dim=-1)
    return values, v


def exact_norms(
    net: SearchNetwork, x: torch.Tensor, norm: NormName
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(‖J(x)‖_p, v)`` row-wise from the full Jacobian, or ``None`` when that is too costly."""
    if min(net.input_dim, net.output_dim) > FULL_JACOBIAN_LIMIT and norm == "2":
        return None
    with torch.no_grad():
        jac = full_jacobian(net.function(), x, net.output_dim, net.widest)
        return matrix_norm_witness(jac, norm)
