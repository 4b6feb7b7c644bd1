"""Exact float64 products: when ``a · b`` rounds to nothing (the test of the folding rules).

``x = m · 2^e`` with ``1/2 ≤ |m| < 1`` has ``M = |m| · 2^53`` an integer; its significant bits
are 53 minus its trailing zero bits. A product of two float64 numbers is exact when their
significands have at most 53 significant bits together and the product is a normal number
(:mod:`tightlip.interop.affine`).
"""

from __future__ import annotations

import torch

#: float64 significand bits
_SIGNIFICAND_BITS = 53
#: the smallest normal float64
SMALLEST_NORMAL = 2.0**-1022
_SMALLEST_NORMAL = SMALLEST_NORMAL


def significant_bits(x: torch.Tensor) -> torch.Tensor:
    """Per entry, the number of significant bits of a float64 number (0 for zero).

    ``x = m · 2^e`` with ``1/2 ≤ |m| < 1`` (``frexp``), so ``M = |m| · 2^53`` is an integer;
    its significant bits are 53 minus its trailing zero bits.
    """
    x = x.to(torch.float64)
    mantissa, _ = torch.frexp(x)
    integer = (mantissa.abs() * 2.0**_SIGNIFICAND_BITS).to(torch.int64)
    lowest = integer & (-integer)
    trailing = torch.where(integer == 0, 0, torch.log2(lowest.clamp_min(1).to(torch.float64)))
    bits = _SIGNIFICAND_BITS - trailing.to(torch.int64)
    return torch.where(x == 0, torch.zeros_like(bits), bits)


def exact_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """``a * b`` (broadcast) if every product is exact in float64, else ``None`` (module doc)."""
    product = a * b
    bits = significant_bits(a) + significant_bits(b)
    zero = (a == 0) | (b == 0)
    normal = product.abs() >= _SMALLEST_NORMAL
    exact = zero | ((bits <= _SIGNIFICAND_BITS) & normal & torch.isfinite(product))
    return product if bool(exact.all()) else None
