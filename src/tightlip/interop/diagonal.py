"""``diag(d)`` as a linear operator, with a certified entrywise error for rounded scales.

Input normalisation ``(x − μ) / σ`` and batch normalisation ``γ (x − μ) / √(v + ε) + β`` are
diagonal linear maps plus a shift. Their diagonal ``d`` is often not a float64 number (``1/σ``
is not, for σ = 0.3081), so a :class:`Diagonal` holds the float64 values ``d̂`` *and* a
non-negative ``e`` with ``|d̂_i − d_i| ≤ e_i`` (zero when exact). It implements the
:class:`~tightlip.operators.LinearOperator` protocol:

* ``‖diag(d)‖_{p→p} = max_i |d_i|`` for every p ∈ [1, ∞] (a unit vector attains it, and
  ``‖d ⊙ x‖_p ≤ max|d_i| ‖x‖_p``), so ``certified_norm`` is ``max_i (|d̂_i| + e_i)`` rounded up;
* ``dense()`` is ``diag(d̂)`` and ``dense_error()`` is ``diag(e)``: a merge with a neighbouring
  matrix (:class:`~tightlip.operators.Product`) carries the error into its certified bound.
"""

from __future__ import annotations

import math

import torch

from tightlip.errors import ModelShapeError
from tightlip.norms import NormName
from tightlip.operators import DENSE_ENTRY_LIMIT, check_dense_size


class Diagonal:
    """``h ↦ d ⊙ h`` with ``|d̂ − d| ≤ error`` entrywise (module docstring)."""

    def __init__(
        self,
        values: torch.Tensor,
        error: torch.Tensor | None = None,
        *,
        name: str = "scale",
    ) -> None:
        d = torch.as_tensor(values).detach().to(device="cpu", dtype=torch.float64).reshape(-1)
        e = (
            torch.zeros_like(d)
            if error is None
            else torch.as_tensor(error).detach().to(device="cpu", dtype=torch.float64).reshape(-1)
        )
        if d.numel() == 0 or e.shape != d.shape:
            raise ModelShapeError(f"{name}: a diagonal needs values and errors of one length")
        if not (torch.isfinite(d).all() and torch.isfinite(e).all()):
            raise ValueError(f"{name}: the diagonal contains NaN or infinite entries")
        if bool((e < 0).any()):
            raise ValueError(f"{name}: an error bound must be non-negative")
        self.values = d
        self.error = e
        self.name = name
        self._norm: float | None = None

    @property
    def in_features(self) -> int:
        return self.values.numel()

    @property
    def out_features(self) -> int:
        return self.values.numel()

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return None

    @property
    def exact_dense(self) -> bool:
        return not bool((self.error > 0).any())

    def apply(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.values.to(dtype=h.dtype, device=h.device)

    def apply_transpose(self, g: torch.Tensor) -> torch.Tensor:
        return self.apply(g)

    def certified_norm(self, norm: NormName) -> float:
        """``max_i (|d̂_i| + e_i)``, each sum rounded up: ``≥ max_i |d_i|``, the norm in every p."""
        if self._norm is None:
            sums = self.values.abs() + self.error
            upper = torch.nextafter(sums, torch.full_like(sums, math.inf))
            self._norm = float(upper.max())
        return self._norm

    def dense(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        check_dense_size(self.out_features, self.in_features, max_entries, self.name)
        return torch.diag(self.values)

    def dense_error(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        check_dense_size(self.out_features, self.in_features, max_entries, self.name)
        return torch.diag(self.error)

    def __repr__(self) -> str:
        exact = "exact" if self.exact_dense else "rounded"
        return f"Diagonal({self.in_features}, {exact}, name={self.name!r})"
