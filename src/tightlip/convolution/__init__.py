"""Convolutions and pooling as linear operators, with sound operator norms in ℓ1, ℓ2 and ℓ∞.

* :mod:`~tightlip.convolution.geometry` — which input each tap of each output reads, one
  spatial axis at a time (exact integer counts, the tori of the Fourier bound);
* :mod:`~tightlip.convolution.abs_sums` — ℓ1 and ℓ∞ norms, exact (absolute column and row sums);
* :mod:`~tightlip.convolution.spectral` — a guaranteed upper bound on the ℓ2 norm (the
  multi-channel Fourier blocks of Sedghi et al. 2019, polyphase for strides, rounding included);
* :mod:`~tightlip.convolution.operators` — :class:`Conv2dOperator` and
  :class:`AvgPool2dOperator`, implementations of :class:`tightlip.operators.LinearOperator`.

The package imports nothing at load time beyond :mod:`~tightlip.convolution.geometry` (pure
index arithmetic, which :mod:`tightlip.layers.pooling` also reads), so that ``layers`` stay
below ``operators``; import the operators from :mod:`tightlip.convolution.operators`.
"""

from tightlip.convolution.geometry import Axis, FourierPlan, resolve_padding

__all__ = ["Axis", "FourierPlan", "resolve_padding"]
