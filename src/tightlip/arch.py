"""A network's layers in one short string: ``c32k3,c32k4s2,c64k3,c64k4s2,f512,f512``.

Tokens, separated by commas, in order (each convolution and each dense layer is followed by
the network's activation; the classifier ``num_classes`` comes last and is not written):

=====================  ========================================================================
``c<C>k<K>``           2-D convolution to ``C`` channels with a ``K × K`` kernel; optional
                       suffixes ``s<S>`` (stride, default 1), ``p<P>`` (zero padding, default
                       ``d(K − 1) // 2``, which keeps the size at stride 1 and halves it, rounded
                       up, at stride 2 for even sizes), ``d<D>`` (dilation), ``circ`` (circular
                       padding), e.g. ``c64k4s2``, ``c16k3p0``, ``c32k3circ``
``avg<K>`` ``max<K>``  ``K × K`` average / max pooling, stride ``K`` unless ``s<S>`` follows
``f<W>``               dense layer of width ``W`` (after the feature maps are flattened)
=====================  ========================================================================

4C3F, the convolutional network of GloRo (Leino, Wang & Fredrikson, ICML 2021) on MNIST, is
``c32k3,c32k4s2,c64k3,c64k4s2,f512,f512``. A string of dense layers only is the same network as
``widths``. :func:`parse_arch` reads a string into :class:`ConvLayer`, :class:`PoolLayer` and
:class:`DenseLayer` descriptions, :func:`format_arch` writes the canonical string back.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from tightlip.errors import BadArgumentError, ModelShapeError


@dataclass(frozen=True)
class ConvLayer:
    """A convolution to ``channels`` channels (bias and activation set by the model)."""

    channels: int
    kernel: int
    stride: int = 1
    padding: int | None = None
    dilation: int = 1
    circular: bool = False

    @property
    def pad(self) -> int:
        """The padding on every side (default ``d(k − 1) // 2``)."""
        return self.padding if self.padding is not None else self.dilation * (self.kernel - 1) // 2

    def token(self) -> str:
        text = f"c{self.channels}k{self.kernel}"
        text += f"s{self.stride}" if self.stride != 1 else ""
        text += f"p{self.padding}" if self.padding is not None else ""
        text += f"d{self.dilation}" if self.dilation != 1 else ""
        return text + ("circ" if self.circular else "")


@dataclass(frozen=True)
class PoolLayer:
    """Average (``kind="avg"``) or max (``kind="max"``) pooling."""

    kind: str
    kernel: int
    stride: int | None = None

    @property
    def step(self) -> int:
        return self.stride if self.stride is not None else self.kernel

    def token(self) -> str:
        return f"{self.kind}{self.kernel}" + (f"s{self.stride}" if self.stride is not None else "")


@dataclass(frozen=True)
class DenseLayer:
    """A dense (fully connected) layer of ``width`` units."""

    width: int

    def token(self) -> str:
        return f"f{self.width}"


Layer = ConvLayer | PoolLayer | DenseLayer

_CONV = re.compile(r"c(\d+)k(\d+)(?:s(\d+))?(?:p(\d+))?(?:d(\d+))?(circ)?")
_POOL = re.compile(r"(avg|max)(\d+)(?:s(\d+))?")
_DENSE = re.compile(r"f(\d+)")


def parse_arch(text: str) -> tuple[Layer, ...]:
    """The layers of an architecture string (module docstring); one clear error per bad token."""
    if not text.strip():
        raise BadArgumentError("architecture '' has no layer (e.g. c32k3,c32k4s2,f512)")
    tokens = text.replace(" ", "").lower().split(",")
    if "" in tokens:
        raise BadArgumentError(
            f"architecture {text!r} has an empty layer (a leading, trailing or doubled comma)"
        )
    layers: list[Layer] = []
    for token in tokens:
        layers.append(_parse_token(token, text))
    _check_order(layers, text)
    return tuple(layers)


def _parse_token(token: str, text: str) -> Layer:
    if match := _CONV.fullmatch(token):
        channels, kernel, stride, padding, dilation, circ = match.groups()
        layer: Layer = ConvLayer(
            int(channels),
            int(kernel),
            int(stride or 1),
            None if padding is None else int(padding),
            int(dilation or 1),
            circ is not None,
        )
        values = [layer.channels, layer.kernel, layer.stride, layer.dilation]
    elif match := _POOL.fullmatch(token):
        kind, kernel, stride = match.groups()
        layer = PoolLayer(kind, int(kernel), None if stride is None else int(stride))
        values = [layer.kernel, layer.step]
    elif match := _DENSE.fullmatch(token):
        layer = DenseLayer(int(match.group(1)))
        values = [layer.width]
    else:
        raise BadArgumentError(
            f"architecture {text!r}: cannot read {token!r} (expected e.g. c32k3, c64k4s2, "
            "c16k3p0d2, c32k3circ, avg2, max2s1, f512)"
        )
    if min(values) < 1:
        raise ModelShapeError(f"architecture {text!r}: {token!r} needs positive sizes")
    return layer


def _check_order(layers: list[Layer], text: str) -> None:
    seen_dense = False
    for i, layer in enumerate(layers):
        if isinstance(layer, DenseLayer):
            seen_dense = True
        elif seen_dense:
            raise BadArgumentError(
                f"architecture {text!r}: {layer.token()!r} comes after a dense layer; "
                "convolutions and pooling come first"
            )
        if i == 0 and isinstance(layer, PoolLayer) and layer.kind == "max":
            raise BadArgumentError(f"architecture {text!r}: max pooling must follow a layer")


def format_arch(layers: tuple[Layer, ...]) -> str:
    """The canonical string of ``layers`` (``parse_arch(format_arch(x)) == x``)."""
    return ",".join(layer.token() for layer in layers)


def is_convolutional(layers: tuple[Layer, ...]) -> bool:
    return any(not isinstance(layer, DenseLayer) for layer in layers)


def dense_widths(layers: tuple[Layer, ...]) -> tuple[int, ...]:
    return tuple(layer.width for layer in layers if isinstance(layer, DenseLayer))


def infer_image_shape(input_dim: int) -> tuple[int, int, int]:
    """``(1, s, s)`` if ``input_dim = s²`` (MNIST: 784), ``(3, s, s)`` if ``input_dim = 3s²``
    (CIFAR-10: 3072); otherwise the shape must be given."""
    for channels in (1, 3):
        side = math.isqrt(input_dim // channels)
        if input_dim % channels == 0 and side * side * channels == input_dim:
            return (channels, side, side)
    raise ModelShapeError(
        f"cannot infer an image shape from {input_dim} input features: give input_shape "
        "(C, H, W)"
    )
