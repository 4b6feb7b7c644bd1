"""The bias-free, orthogonally initialised linear layer."""

from __future__ import annotations

from torch import nn


class Linear(nn.Linear):
    """``nn.Linear`` that is bias-free unless asked, with orthogonal initialisation.

    Bias terms shift the activation pattern so that the top singular directions cannot pass
    through the nonlinearity, one of the three obstructions to a tight trivial bound
    (Kuang, Xu, Sivaranjani & Lin, *Lipschitz verification of neural networks
    through training*, 2026). Orthogonal initialisation starts every layer perfectly
    conditioned (all singular values equal), the other obstruction.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__(in_features, out_features, bias=bias)

    def reset_parameters(self) -> None:
        nn.init.orthogonal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
