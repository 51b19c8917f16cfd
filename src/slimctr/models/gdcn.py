"""GDCN: Gated Deep Cross Network (Wang, Gu, Li, Lu, Zhang, Gu, CIKM 2023, arXiv 2311.04635).

The input c0 = [e_1 || ... || e_F] in R^D concatenates the field embeddings (per-field widths
allowed, D = sum_f d_f; field-level dimension optimisation relies on them). L gated cross layers

    c_{l+1} = c0 ⊙ (W_c^(l) c_l + b_l) ⊙ sigmoid(W_g^(l) c_l) + c_l

model explicit interactions up to order L + 1, each weighed by an information gate computed from
c_l. Three registered variants (GDCN spec 2.4):

    gcn      logit = w^T c_L + b                      (the gated cross network alone)
    gdcn_s   logit = w^T MLP(c_L) + b                 (stacked)
    gdcn_p   logit = w^T [c_L || MLP(c0)] + b         (parallel)

Defaults follow the paper and its reference code (spec 3): 16-wide embeddings, 3 cross layers, a
400-400-400 ReLU MLP with dropout 0.5 and BatchNorm (a reference-code detail). Initialisation as
in the reference code (spec 2.6): embeddings xavier-uniform per field (``embedding_init_std=None``;
a number gives N(0, std^2) instead), W_c and W_g U(+-1/sqrt(D)), cross biases U(0, 1) (DCN-V2
starts them at 0), MLP weights xavier-uniform. The output layers of GCN and GDCN-P keep PyTorch's
Linear default; GDCN-S's is xavier-uniform, being the reference DNN's own output layer.

For explanations every variant exposes ``gates(batch)`` (the per-layer gate values), the
``cross_matrices()`` and ``field_dims``; ``forward`` does not compute anything extra for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from slimctr.data.batch import Batch
from slimctr.models.checks import (
    check_bool,
    check_dropout,
    check_embedding_dim,
    check_hidden_dims,
    check_init_std,
    check_int,
)
from slimctr.models.registry import register
from slimctr.nn.cross import GatedCrossNetwork
from slimctr.nn.embedding import FieldEmbedding
from slimctr.nn.mlp import MLP
from slimctr.schema import Schema


@dataclass(frozen=True, kw_only=True)
class GCNConfig:
    embedding_dim: int | dict[str, int] = 16  # one width, or a width per field name
    num_cross_layers: int = 3
    embedding_init_std: float | None = None  # None: xavier-uniform per field; std: N(0, std^2)

    def __post_init__(self) -> None:
        check_embedding_dim("embedding_dim", self.embedding_dim, per_field=True)
        check_int("num_cross_layers", self.num_cross_layers, minimum=1)
        check_init_std("embedding_init_std", self.embedding_init_std)


# Not a subclass of GCNConfig, so a GDCN config handed to GCN is a type error rather than MLP
# keys silently ignored.
@dataclass(frozen=True, kw_only=True)
class GDCNConfig:
    embedding_dim: int | dict[str, int] = 16  # one width, or a width per field name
    num_cross_layers: int = 3
    hidden_dims: tuple[int, ...] = (400, 400, 400)  # at least one layer; no MLP is ``gcn``
    dropout: float = 0.5
    batch_norm: bool = True
    embedding_init_std: float | None = None  # None: xavier-uniform per field; std: N(0, std^2)

    def __post_init__(self) -> None:
        check_embedding_dim("embedding_dim", self.embedding_dim, per_field=True)
        check_int("num_cross_layers", self.num_cross_layers, minimum=1)
        check_hidden_dims("hidden_dims", self.hidden_dims, allow_empty=False)
        check_dropout("dropout", self.dropout)
        check_bool("batch_norm", self.batch_norm)
        check_init_std("embedding_init_std", self.embedding_init_std)


class _GatedCrossModel(nn.Module):
    """Embedding and gated cross network shared by the three variants, and what explains them."""

    def __init__(self, schema: Schema, config: GCNConfig | GDCNConfig) -> None:
        super().__init__()
        self.embedding = FieldEmbedding(
            schema, config.embedding_dim, init_std=config.embedding_init_std
        )
        self.cross = GatedCrossNetwork(self.embedding.output_dim, config.num_cross_layers)

    @property
    def field_dims(self) -> tuple[int, ...]:
        """Width d_f of each field, in the order of the slices of c0 (``Schema.fields`` order)."""
        return self.embedding.field_dims

    def gates(self, batch: Batch) -> list[Tensor]:
        """Gate values sigmoid(W_g^(l) c_l) of each cross layer, (B, D) each, in (0, 1).

        They depend on the embeddings and cross layers only, so train and eval mode agree. Call
        under ``torch.no_grad()`` unless gradients are wanted.
        """
        return self.cross.forward_with_gates(self.embedding.flat(batch))[1]

    def gated_terms(self, batch: Batch) -> list[Tensor]:
        """What each cross layer adds, c0 ⊙ (W_c^(l) c_l + b) ⊙ sigmoid(W_g^(l) c_l), (B, D)
        each: the gated signal that flows, where the gates alone say how open they are."""
        return self.cross.forward_with_terms(self.embedding.flat(batch))[2]

    def cross_matrices(self) -> list[Tensor]:
        """W_c^(l) of each cross layer, (D, D), detached views of the parameters."""
        return self.cross.cross_matrices()


def _mlp(width: int, config: GDCNConfig) -> MLP:
    return MLP(width, config.hidden_dims, config.dropout, config.batch_norm)


@register("gcn", GCNConfig, "GCN (Wang et al. 2023): gated cross network alone, GDCN without MLP")
class GCN(_GatedCrossModel):
    def __init__(self, schema: Schema, config: GCNConfig) -> None:
        super().__init__(schema, config)
        self.config = config
        self.output = nn.Linear(self.embedding.output_dim, 1)

    def forward(self, batch: Batch) -> Tensor:
        return self.output(self.cross(self.embedding.flat(batch))).squeeze(1)  # (B,)


@register("gdcn_s", GDCNConfig, "GDCN-S (Wang et al. 2023): gated cross network, then MLP")
class GDCNS(_GatedCrossModel):
    def __init__(self, schema: Schema, config: GDCNConfig) -> None:
        super().__init__(schema, config)
        self.config = config
        self.mlp = _mlp(self.embedding.output_dim, config)
        self.output = nn.Linear(self.mlp.output_dim, 1)
        nn.init.xavier_uniform_(self.output.weight)

    def forward(self, batch: Batch) -> Tensor:
        hidden = self.mlp(self.cross(self.embedding.flat(batch)))  # (B, H)
        return self.output(hidden).squeeze(1)  # (B,)


@register("gdcn_p", GDCNConfig, "GDCN-P (Wang et al. 2023): gated cross network and MLP, parallel")
class GDCNP(_GatedCrossModel):
    def __init__(self, schema: Schema, config: GDCNConfig) -> None:
        super().__init__(schema, config)
        self.config = config
        width = self.embedding.output_dim  # D
        self.mlp = _mlp(width, config)
        self.output = nn.Linear(width + self.mlp.output_dim, 1)

    def forward(self, batch: Batch) -> Tensor:
        x0 = self.embedding.flat(batch)  # (B, D)
        hidden = torch.cat([self.cross(x0), self.mlp(x0)], dim=1)  # (B, D + H)
        return self.output(hidden).squeeze(1)  # (B,)
