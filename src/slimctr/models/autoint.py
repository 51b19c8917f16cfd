"""AutoInt+ (Song et al., CIKM 2019, arXiv 1810.11921): self-attention over fields beside an MLP.

The F field embeddings, stacked to (B, F, d), pass through L interacting layers
(``slimctr.nn.attention``, Eq. 5-8: multi-head self-attention with a residual connection and a
ReLU). The output layer (Eq. 9) concatenates the final field vectors and maps them to a logit,

    logit_att = w^T [e^Res_1 || ... || e^Res_F] + b

and AutoInt+ (Sec. 5.5) adds a feed-forward network on the concatenated embeddings,
logit = logit_att + MLP(e_1 || ... || e_F). With ``hidden_dims=()`` there is no MLP: plain AutoInt.

Defaults: 3 interacting layers, 2 heads of d' = 32 each and residual connections, the setting
the paper reports (Sec. 5.1.3); ``attention_dim`` is the per-head width d'. ``scale_scores``,
``attention_dropout``, ``identity_residual`` and ``layer_norm`` switch on FuxiCTR's variant of
the layer (``slimctr.nn.attention``), the one BARS tunes. The MLP is the deep
part of ``dcnv2`` and ``xdeepfm`` (400-400-400 with BatchNorm, dropout 0, embeddings
N(0, 1e-4^2)) so that the models compare on one footing. All fields need one width, or
``embedding_align_dim=K`` to project each to width K (``slimctr.nn.align``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from slimctr.data.batch import Batch
from slimctr.errors import SlimctrError
from slimctr.models.checks import (
    check_bool,
    check_dropout,
    check_embedding_dim,
    check_hidden_dims,
    check_init_std,
    check_int,
    check_optional_int,
)
from slimctr.models.registry import register
from slimctr.nn.attention import InteractingLayer
from slimctr.nn.embedding import FieldEmbedding
from slimctr.nn.mlp import MLP
from slimctr.schema import Schema
from slimctr.tuning.space import Int, Param, generic_space_of


@dataclass(frozen=True, kw_only=True)
class AutoIntConfig:
    embedding_dim: int | dict[str, int] = 16  # per-field widths: equal, or aligned
    embedding_align_dim: int | None = None  # K: project every field to width K (spec 4.3)
    attention_layers: int = 3  # L interacting layers
    num_heads: int = 2  # H
    attention_dim: int = 32  # d', the width of one head
    use_residual: bool = True  # W_Res e_m in Eq. 8
    identity_residual: bool = False  # e_m itself instead of W_Res e_m where the widths match
    scale_scores: bool = False  # divide the attention scores by sqrt(d')
    attention_dropout: float = 0.0  # on attention weights and on each layer's output
    layer_norm: bool = False  # LayerNorm before each layer's ReLU
    hidden_dims: tuple[int, ...] = (400, 400, 400)  # () : AutoInt without the "+" MLP
    dropout: float = 0.0
    batch_norm: bool = True
    embedding_init_std: float | None = 1e-4  # N(0, std^2) for all embeddings; None: xavier

    # slimctr tune: the generic keys and the number of attention layers
    search_space: ClassVar[tuple[Param, ...]] = (
        *generic_space_of("embedding_dim", "hidden_dims", "dropout"),
        Int("attention_layers", 1, 5),
    )

    def __post_init__(self) -> None:
        check_optional_int("embedding_align_dim", self.embedding_align_dim, minimum=1)
        aligned = self.embedding_align_dim is not None  # unequal widths are projected
        check_embedding_dim("embedding_dim", self.embedding_dim, per_field=aligned)
        check_int("attention_layers", self.attention_layers, minimum=1)
        check_int("num_heads", self.num_heads, minimum=1)
        check_int("attention_dim", self.attention_dim, minimum=1)
        check_bool("use_residual", self.use_residual)
        check_bool("identity_residual", self.identity_residual)
        if self.identity_residual and not self.use_residual:
            raise SlimctrError(
                "model.identity_residual shapes the residual: set model.use_residual=true"
            )
        check_bool("scale_scores", self.scale_scores)
        check_dropout("attention_dropout", self.attention_dropout)
        check_bool("layer_norm", self.layer_norm)
        check_hidden_dims("hidden_dims", self.hidden_dims, allow_empty=True)
        check_dropout("dropout", self.dropout)
        check_bool("batch_norm", self.batch_norm)
        check_init_std("embedding_init_std", self.embedding_init_std)


@register("autoint", AutoIntConfig, "AutoInt+ (Song et al. 2019): self-attention over fields + MLP")
class AutoInt(nn.Module):
    def __init__(self, schema: Schema, config: AutoIntConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = FieldEmbedding(
            schema,
            config.embedding_dim,
            init_std=config.embedding_init_std,
            align_dim=config.embedding_align_dim,
        )
        num_fields = self.embedding.num_fields
        width = self.embedding.output_dim // num_fields  # d
        self.attention = nn.ModuleList()
        for _ in range(config.attention_layers):
            layer = InteractingLayer(
                width,
                config.attention_dim,
                config.num_heads,
                config.use_residual,
                scale_scores=config.scale_scores,
                dropout=config.attention_dropout,
                identity_residual=config.identity_residual,
                layer_norm=config.layer_norm,
            )
            self.attention.append(layer)
            width = layer.output_dim
        self.attention_output = nn.Linear(num_fields * width, 1)  # w, b of Eq. 9
        self.mlp: MLP | None = None
        if config.hidden_dims:
            self.mlp = MLP(
                self.embedding.output_dim,
                config.hidden_dims,
                dropout=config.dropout,
                batch_norm=config.batch_norm,
                output_dim=1,
            )

    def forward(self, batch: Batch) -> Tensor:
        embeddings = self.embedding(batch)  # (B, F, d)
        x = embeddings
        for layer in self.attention:
            x = layer(x)  # (B, F, H d')
        logit = self.attention_output(x.flatten(1)).squeeze(1)  # (B,)
        if self.mlp is not None:
            logit = logit + self.mlp(embeddings.flatten(1)).squeeze(1)
        return logit  # (B,)
