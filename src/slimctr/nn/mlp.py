"""The multilayer perceptron used as the "deep" part of CTR models."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from slimctr.errors import SlimctrError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


class MLP(nn.Module):
    """h_{k+1} = Dropout(act(BN(W_k h_k + b_k))) for each hidden width, then optionally W_out h.

    Each hidden layer is Linear -> BatchNorm1d (when ``batch_norm``) -> activation -> Dropout, the
    layer of the GDCN reference DNN (spec 2.4). With ``output_dim`` a final Linear follows, with no
    activation. Weights are xavier-uniform, biases PyTorch's default (spec 2.6). An empty
    ``hidden_dims`` without ``output_dim`` is the identity.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
        output_dim: int | None = None,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise SlimctrError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise SlimctrError(f"dropout must be in [0, 1), got {dropout}")
        widths = [input_dim, *hidden_dims] + ([] if output_dim is None else [output_dim])
        if min(widths) < 1:
            raise SlimctrError(f"MLP widths must be >= 1, got {widths}")
        layers: list[nn.Module] = []
        width = input_dim
        for hidden in hidden_dims:
            layers.append(nn.Linear(width, hidden))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        if output_dim is not None:
            layers.append(nn.Linear(width, output_dim))
            width = output_dim
        self.layers = nn.Sequential(*layers)
        self._output_dim = width
        for module in self.layers:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)

    @property
    def output_dim(self) -> int:
        """Width of the output: ``output_dim`` if given, else the last hidden width (or input)."""
        return self._output_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)  # (B, output_dim)
