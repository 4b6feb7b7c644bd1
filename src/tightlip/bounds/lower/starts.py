"""Starting points of the search: data points and random points, screened by their ``‖J‖``.

Random points are Gaussian at several scales and uniform in ``[0, 1]ⁿ``; when evaluating a
point is cheap (small networks), a pool of up to 16384 of them is screened by the exact
``‖J(x)‖`` first, which alone finds the best region of tiny networks. Bias-free positively
homogeneous PL networks have ``J(c x) = J(x)`` for ``c > 0``, so their starts are put on a
sphere.
"""

from __future__ import annotations

from typing import Any

import torch

from tightlip.bounds.lower.jacobians import exact_norms
from tightlip.bounds.lower.network import SearchNetwork, row_rms, to_sphere
from tightlip.bounds.lower.options import GradientOptions
from tightlip.bounds.lower.state import SearchState
from tightlip.errors import BadArgumentError
from tightlip.norms import NormName


def screen_size(net: SearchNetwork, num_random: int, screen: int | None) -> int:
    """How many random points to screen: cheap networks get many (up to 16384)."""
    if screen is not None:
        return max(int(screen), num_random)
    per_point = net.parameter_count * (min(net.input_dim, net.output_dim) + 1)
    return int(min(16384, max(num_random, 4e8 // max(1, per_point))))


def prepare_starts(
    net: SearchNetwork,
    norm: NormName,
    starts: torch.Tensor | None,
    options: GradientOptions,
    state: SearchState,
) -> tuple[torch.Tensor, float, dict[str, Any]]:
    """Starting points: data points and random points, screened by their exact ``‖J‖``.

    Data: up to ``8 · max_starts`` of them are evaluated and the best ``max_starts`` kept.
    Random: a pool (half Gaussian at the data's scale times a factor in ``[1/8, 8]``, or in
    ``[1/8, 2¹²]`` for a quarter of them when the network has biases, half
    uniform in ``[0, 1]ⁿ``) of :func:`screen_size` points is evaluated, and the best
    ``num_random / 2`` plus ``num_random / 2`` others drawn at random are kept.
    """
    chain, generator = net.chain, state.generator
    num_random, max_starts = options.num_random, options.max_starts
    n = chain.input_dim
    info: dict[str, Any] = {"screen_budget": screen_size(net, num_random, options.screen)}
    pieces = []
    scale = 1.0

    def ranked(pool: torch.Tensor) -> torch.Tensor | None:
        exact = exact_norms(net, pool.to(net.dtype), norm)
        if exact is None:
            return None
        state.count(pool.shape[0])
        return torch.argsort(torch.nan_to_num(exact[0], nan=-1.0), descending=True)

    if starts is not None and starts.numel():
        data = chain.check_input(
            starts.detach().to("cpu", torch.float64).reshape(starts.shape[0], -1)
        )
        data = data[torch.isfinite(data).all(dim=1)]
        if data.shape[0]:
            scale = float(row_rms(data).median().clamp_min(1e-6))
            if data.shape[0] > max_starts:
                pool = data[torch.randperm(data.shape[0], generator=generator)[: 8 * max_starts]]
                order = ranked(pool)
                data = pool[:max_starts] if order is None else pool[order[:max_starts]]
                info["data_screened"] = int(pool.shape[0])
            pieces.append(data)
            info["data_starts"] = int(data.shape[0])
    if num_random > 0:
        size = info["screen_budget"]
        gaussian = size - size // 2
        exponent = 6.0 * torch.rand(gaussian, 1, generator=generator, dtype=torch.float64) - 3.0
        if chain.has_bias:
            # far away the biases no longer matter: the regions of f(R x)/R, R → ∞, are those
            # of the bias-free network, and unbounded regions may only show up there
            far = torch.arange(gaussian) % 4 == 3
            exponent[far] = (
                15.0 * torch.rand(int(far.sum()), 1, generator=generator, dtype=torch.float64) - 3.0
            )
        spread = 2.0**exponent
        pool = torch.cat(
            [
                scale * spread * torch.randn(gaussian, n, generator=generator, dtype=torch.float64),
                torch.rand(size // 2, n, generator=generator, dtype=torch.float64),
            ]
        )
        if net.homogeneous:
            pool = to_sphere(pool)
        if size > num_random:
            order = ranked(pool)
            if order is None:
                order = torch.randperm(size, generator=generator)
            top = num_random - num_random // 2
            rest = order[top:][torch.randperm(size - top, generator=generator)[: num_random - top]]
            pool = pool[torch.cat([order[:top], rest])]
        pieces.append(pool)
        info["random_screened"] = size
    if not pieces:
        raise BadArgumentError("no starting points: give starts or num_random > 0")
    x0 = torch.cat(pieces, dim=0)
    x0 = torch.where(torch.isfinite(x0), x0, torch.zeros_like(x0))
    if net.homogeneous:
        zero = row_rms(x0).squeeze(-1) == 0
        x0[zero] = torch.randn(int(zero.sum()), n, generator=generator, dtype=torch.float64)
        x0 = to_sphere(x0)
        scale = 1.0
    info["random_starts"] = num_random
    return x0.to(net.dtype), scale, info
