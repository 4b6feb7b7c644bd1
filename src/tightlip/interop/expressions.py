"""Tensors of a graph being read, and the activations they form.

A tensor computed by the graph is one of

* :class:`Lin`: an affine function of the current frontier (the last activation's output),
  held as a :class:`~tightlip.interop.affine.PendingAffine`;
* :class:`Op`: an elementwise non-linear expression of such tensors, kept *unevaluated* until
  an affine node or the output consumes it. Polyactivations are several nodes in a graph
  (``Concat(Sin z, Cos z)`` is SinCos), so a ``Sin`` alone is not yet an activation.

:func:`recognise` says which tightlip activation an expression is, structurally (never by
evaluating it): the patterns are the ONNX forms of the activations in :mod:`tightlip.layers`,
as ``torch.onnx.export`` writes them.

=================================================  ===========================================
``Relu``, ``Abs``, ``Tanh``, ``Sigmoid``            ReLU, Abs, Tanh, Sigmoid
``LeakyRelu(alpha)``                               LeakyReLU(alpha)
``Min(Relu(z), θ)``, ``Clip(z, 0, θ)`` (θ ≥ 0)     ClippedReLU(θ) (local-Lipschitz training)
``Concat(Sin z, Cos z)``                           SinCos
``Concat(Relu z, Relu(Neg z))``                    CReLU
``Concat((z + Sin z)/2, (z − Sin z)/2)``           SinPair
``TopK(Reshape(z, (…, g)), K = g)``                GroupSort(g) (MaxMin for g = 2)
``MaxPool`` on ``(C, H, W)`` maps                   MaxPool2dActivation (its ``param``)
=================================================  ===========================================

Concatenations must be along axis 1: of flat feature tensors, or of ``(C, H, W)`` maps along
the channels, which in C order is the concatenation of the flattened maps (as
:class:`~tightlip.layers.channels.OnChannels` computes CReLU and SinCos on maps), so that the
block order is the one tightlip's polyactivations use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tightlip.interop.affine import PendingAffine
from tightlip.layers import (
    Abs,
    Activation,
    ClippedReLU,
    CReLU,
    GroupSort,
    LeakyReLU,
    MaxMin,
    ReLU,
    Sigmoid,
    SinCos,
    SinPair,
    Tanh,
)


@dataclass(frozen=True, eq=False)
class Lin:
    """An affine function of the frontier ``frontier``; ``shape`` excludes the batch axis.

    ``negates`` is set when this tensor is ``−negates`` (an ONNX ``Neg``), for CReLU.
    """

    affine: PendingAffine
    frontier: int
    shape: tuple[int, ...]
    negates: Lin | None = None


@dataclass(frozen=True, eq=False)
class Op:
    """An unevaluated elementwise expression (module docstring).

    ``kind`` is one of :data:`UNARY`, ``"sin"``, ``"cos"``, ``"add"``, ``"sub"`` (two computed
    tensors), ``"mul"``/``"div"`` (by the scalar ``param``), ``"min"`` (with the constant
    vector ``param``), ``"concat"``, ``"topk"`` (groups of ``param``), ``"maxpool"`` (the
    :class:`~tightlip.layers.pooling.MaxPool2dActivation` ``param``). ``node`` names the ONNX
    node that made it, for messages.
    """

    kind: str
    args: tuple[Lin | Op, ...]
    shape: tuple[int, ...]
    node: str
    param: Any = None


Expr = Lin | Op

#: elementwise activations of one ONNX node each
UNARY = ("relu", "abs", "tanh", "sigmoid", "leaky")


def _unary(kind: str, param: Any) -> Activation:
    if kind == "leaky":
        return LeakyReLU(param)
    return {"relu": ReLU, "abs": Abs, "tanh": Tanh, "sigmoid": Sigmoid}[kind]()


def _is(expr: Expr, kind: str, *, of: Lin | None = None) -> bool:
    """``expr`` is ``Op(kind, (of,))`` (any single argument when ``of`` is ``None``)."""
    if not isinstance(expr, Op) or expr.kind != kind or len(expr.args) != 1:
        return False
    return isinstance(expr.args[0], Lin) and (of is None or expr.args[0] is of)


def _halved(expr: Expr) -> Expr | None:
    """``e`` if ``expr`` is ``e / 2`` or ``e * 0.5``."""
    if isinstance(expr, Op) and (
        (expr.kind == "div" and expr.param == 2.0) or (expr.kind == "mul" and expr.param == 0.5)
    ):
        return expr.args[0]
    return None


def _sinpair_source(plus: Expr, minus: Expr) -> Lin | None:
    """``z`` if the blocks are ``(z + sin z)/2`` and ``(z − sin z)/2``."""
    a, b = _halved(plus), _halved(minus)
    if not (isinstance(a, Op) and isinstance(b, Op) and a.kind == "add" and b.kind == "sub"):
        return None
    z = a.args[0]
    if not isinstance(z, Lin) or b.args[0] is not z:
        return None
    if _is(a.args[1], "sin", of=z) and _is(b.args[1], "sin", of=z):
        return z
    return None


def _concat(blocks: tuple[Expr, ...]) -> tuple[Activation, Lin] | None:
    if len(blocks) != 2:
        return None
    first, second = blocks
    if _is(first, "sin") and _is(second, "cos", of=first.args[0]):  # type: ignore[union-attr]
        return SinCos(), first.args[0]  # type: ignore[union-attr,return-value]
    if _is(first, "relu") and _is(second, "relu"):
        z, negated = first.args[0], second.args[0]  # type: ignore[union-attr]
        if isinstance(negated, Lin) and negated.negates is z:
            return CReLU(), z  # type: ignore[return-value]
    z = _sinpair_source(first, second)
    return None if z is None else (SinPair(), z)


def _clipped(threshold: torch.Tensor, z: Lin) -> tuple[Activation, Lin] | None:
    if len(z.shape) != 1 or bool((threshold < 0).any()):
        return None
    activation = ClippedReLU(z.shape[0])
    activation.threshold = torch.nn.Parameter(threshold.to(torch.float64).clone())
    return activation, z


def recognise(expr: Expr) -> tuple[Activation, Lin] | None:
    """The activation ``expr`` applies and the pre-activation it applies it to, or ``None``."""
    if not isinstance(expr, Op):
        return None
    arg = expr.args[0] if expr.args else None
    if expr.kind in UNARY and isinstance(arg, Lin):
        return _unary(expr.kind, expr.param), arg
    if expr.kind == "min" and _is(arg, "relu"):  # type: ignore[arg-type]
        return _clipped(expr.param, arg.args[0])  # type: ignore[union-attr]
    if expr.kind == "concat":
        return _concat(expr.args)
    if expr.kind == "maxpool" and isinstance(arg, Lin):
        return expr.param, arg
    if expr.kind == "topk" and isinstance(arg, Lin):
        group = int(expr.param)
        return (MaxMin() if group == 2 else GroupSort(group)), arg
    return None
