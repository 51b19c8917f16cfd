"""AutoInt interacting layer (Eq. 5-8): against a naive loop over heads and fields, and sizes."""

from __future__ import annotations

import pytest
import torch

from slimctr.errors import SlimctrError
from slimctr.nn.attention import InteractingLayer


def _naive(
    layer: InteractingLayer, x: torch.Tensor, *, scale: bool = False, identity: bool = False
) -> torch.Tensor:
    """Eq. 5-8 head by head and field by field, with the scores as explicit inner products;
    ``scale`` divides them by sqrt(d'), ``identity`` adds x instead of W_Res x, and a layer norm,
    if the layer has one, is applied by hand before the ReLU (dropout: call in eval mode)."""
    d_head = layer.head_dim
    batch, fields, _ = x.shape
    heads = []
    for h in range(layer.num_heads):
        rows = slice(h * d_head, (h + 1) * d_head)
        w_q, w_k, w_v = (p.weight[rows] for p in (layer.query, layer.key, layer.value))
        out = torch.zeros(batch, fields, d_head, dtype=x.dtype)
        for m in range(fields):
            scores = torch.stack(
                [((x[:, m] @ w_q.T) * (x[:, k] @ w_k.T)).sum(1) for k in range(fields)], dim=1
            )
            alpha = torch.softmax(scores / d_head**0.5 if scale else scores, dim=1)  # (B, F)
            for k in range(fields):
                out[:, m] += alpha[:, k : k + 1] * (x[:, k] @ w_v.T)
        heads.append(out)
    result = torch.cat(heads, dim=2)
    if identity:
        result = result + x
    elif layer.residual is not None:
        result = result + x @ layer.residual.weight.T
    if isinstance(layer.norm, torch.nn.LayerNorm):
        mean = result.mean(dim=2, keepdim=True)
        var = result.var(dim=2, unbiased=False, keepdim=True)
        result = (result - mean) / (var + layer.norm.eps).sqrt()
        result = result * layer.norm.weight + layer.norm.bias
    return torch.relu(result)


@pytest.mark.parametrize("use_residual", [True, False])
def test_layer_equals_naive_loops(use_residual: bool) -> None:
    torch.manual_seed(0)
    layer = InteractingLayer(4, head_dim=3, num_heads=2, use_residual=use_residual).double()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    out = layer(x)
    assert out.shape == (2, 5, 6) and layer.output_dim == 6
    torch.testing.assert_close(out, _naive(layer, x))


def test_fuxictr_variant_equals_naive_loops_in_eval_mode() -> None:
    torch.manual_seed(0)
    switches = dict(scale_scores=True, dropout=0.5, identity_residual=True, layer_norm=True)
    layer = InteractingLayer(6, head_dim=3, num_heads=2, **switches).double()
    with torch.no_grad():  # a layer norm that is not the identity at initialisation
        layer.norm.weight.uniform_(0.5, 2.0)
        layer.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(layer.eval()(x), _naive(layer, x, scale=True, identity=True))
    assert not torch.equal(layer.train()(x), layer.eval()(x))  # dropout acts in training only


def test_identity_residual_only_where_the_widths_match() -> None:
    same = InteractingLayer(6, head_dim=3, num_heads=2, identity_residual=True)
    assert isinstance(same.residual, torch.nn.Identity)
    assert sum(p.numel() for p in same.parameters()) == 3 * 6 * 6
    wider = InteractingLayer(4, head_dim=3, num_heads=2, identity_residual=True)
    assert isinstance(wider.residual, torch.nn.Linear)  # W_Res is still needed: 4 -> 6


def test_one_field_attends_only_to_itself() -> None:
    layer = InteractingLayer(2, head_dim=2, num_heads=1, use_residual=False)
    with torch.no_grad():
        layer.value.weight.copy_(torch.eye(2))
    x = torch.tensor([[[1.0, -2.0]]])  # one field: alpha = 1, output ReLU(W_V e) = [1, 0]
    torch.testing.assert_close(layer(x), torch.tensor([[[1.0, 0.0]]]))


def test_parameter_count_and_bad_sizes() -> None:
    layer = InteractingLayer(4, head_dim=3, num_heads=2)
    assert sum(p.numel() for p in layer.parameters()) == 4 * 4 * 6
    assert sum(p.numel() for p in InteractingLayer(4, 3, 2, False).parameters()) == 3 * 4 * 6
    with pytest.raises(SlimctrError, match="num_heads=0"):
        InteractingLayer(4, head_dim=3, num_heads=0)
