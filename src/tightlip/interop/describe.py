"""The architecture a chain holds, one line per layer, as ``tightlip bound`` prints it.

Each affine step gives one line: its kind (what its operator's ``describe()`` says, e.g.
``conv 1→32 k3 s1 p1 on 28×28`` or ``avg-pool 2 then conv 32→64 k3 s1 p1 on 14×14``; else a
plain ``linear`` map, a ``folded`` one whose
normalisation or batch normalisation was multiplied in with a certified rounding error, or the
``identity`` read-out after a trailing activation), its shape ``in → out``, whether it has a
bias, and the activation after it with its Lipschitz constant in the requested norm.
"""

from __future__ import annotations

from dataclasses import dataclass

from tightlip.interop.builder import IDENTITY_READOUT
from tightlip.model import ActivationStep, AffineStep, LayerChain
from tightlip.norms import NormName, parse_norm


@dataclass(frozen=True)
class LayerLine:
    """One layer: an affine step and the activation after it (``None`` for the last)."""

    index: int
    name: str
    kind: str
    in_features: int
    out_features: int
    bias: bool
    activation: str | None
    lipschitz: float | None

    def text(self, norm: NormName) -> str:
        shape = f"{self.in_features} → {self.out_features}"
        bias = "bias" if self.bias else "no bias"
        then = (
            f"then {self.activation} (Lip_{norm} = {self.lipschitz:.6g})"
            if self.activation is not None
            else "output"
        )
        tag = "" if _uninformative(self.name) else f"   [{self.name}]"
        return f"{self.index:>3}  {self.kind:<8} {shape:<14} {bias:<8} {then}{tag}"


def _uninformative(name: str) -> bool:
    """A module index (``0``, ``layers.3``) or the identity read-out says nothing to a reader."""
    last = name.rsplit(".", 1)[-1]
    return last.isdigit() or name in ("identity", IDENTITY_READOUT, "linear")


def _kind(step: AffineStep) -> str:
    """The operator's own ``describe()`` (``conv 1→32 k3 s1 p1 on 28×28``, ``avg-pool 2``,
    ``linear``), else ``linear`` / ``folded`` by exactness."""
    if step.name == IDENTITY_READOUT:
        return "identity"
    own = getattr(step.operator, "describe", None)
    text = own() if callable(own) else None
    if text is not None:
        return text
    return "linear" if step.exact else "folded"


def layer_lines(chain: LayerChain, norm: NormName | str) -> list[LayerLine]:
    """One :class:`LayerLine` per affine step of ``chain``."""
    norm_name = parse_norm(norm)
    steps = list(chain.steps)
    lines: list[LayerLine] = []
    for i, step in enumerate(steps):
        if not isinstance(step, AffineStep):
            continue
        following = steps[i + 1] if i + 1 < len(steps) else None
        activation = following.activation if isinstance(following, ActivationStep) else None
        lines.append(
            LayerLine(
                index=len(lines) + 1,
                name=step.name,
                kind=_kind(step),
                in_features=step.in_features,
                out_features=step.out_features,
                bias=step.has_bias,
                activation=None if activation is None else _activation_name(activation),
                lipschitz=None if activation is None else activation.lipschitz(norm_name),
            )
        )
    return lines


def describe(chain: LayerChain, norm: NormName | str) -> list[str]:
    """The lines ``tightlip bound`` prints above its table."""
    norm_name = parse_norm(norm)
    return [line.text(norm_name) for line in layer_lines(chain, norm_name)]


def _activation_name(activation: object) -> str:
    own = getattr(activation, "describe", None)
    if callable(own):
        return str(own())
    text = type(activation).__name__
    extra = activation.extra_repr() if hasattr(activation, "extra_repr") else ""
    return f"{text}({extra})" if extra else text
