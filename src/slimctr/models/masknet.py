"""MaskNet (Wang, She, Zhang, DLP-KDD 2021, arXiv 2102.07619): instance-guided masks in MaskBlocks.

An instance-guided mask (Sec. 3.2, Eq. 1) is computed from the concatenated embeddings
V_emb = [e_1 || ... || e_F] in R^D by an aggregation and a projection layer,

    V_mask = W_d2 ReLU(W_d1 V_emb + b_1) + b_2,    W_d1 in R^{rD' x D}, W_d2 in R^{D' x rD'}

with D' the width of what it masks and r the reduction ratio (aggregation width / projection
width). A MaskBlock (Sec. 3.3-3.4, Eq. 6-9) multiplies the mask into a layer-normalised input and
feeds a layer-normalised hidden layer:

    on the embeddings:     V_out = ReLU(LN_HID(W_i (V_mask ⊙ LN_EMB(V_emb))))
    on a block output V_o: V_out = ReLU(LN_HID(W_i (V_mask ⊙ V_o)))

LN_EMB normalises each field's embedding separately; W_i has no bias (LN_HID re-centres).
``embedding_norm=false`` drops LN_EMB (the blocks see V_emb itself, as in BARS's tuned runs), and
``block_dropout`` adds dropout after each block's ReLU (FuxiCTR's MaskBlock has it; the paper
does not mention it).
Serial MaskNet stacks MaskBlocks (the first on the embeddings, every mask from V_emb); parallel
MaskNet runs ``num_blocks`` MaskBlocks on the embeddings and concatenates their outputs. Either
result passes an MLP and logit = w^T MLP(.) + b (with ``hidden_dims=()`` only the output layer).

Defaults: parallel, 3 blocks of width 64, r = 1 (our choice, the paper tunes both); the MLP is the
deep part of ``dcnv2`` (400-400-400 with BatchNorm, dropout 0, embeddings N(0, 1e-4^2)). All
fields need one width (LN_EMB is per field), or ``embedding_align_dim=K`` to project each to
width K (``slimctr.nn.align``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from slimctr.data.batch import Batch
from slimctr.models.checks import (
    check_bool,
    check_choice,
    check_dropout,
    check_embedding_dim,
    check_hidden_dims,
    check_init_std,
    check_int,
    check_optional_int,
)
from slimctr.models.registry import register
from slimctr.nn.embedding import FieldEmbedding
from slimctr.nn.mlp import MLP
from slimctr.schema import Schema
from slimctr.tuning.space import Choice, Int, Param, generic_space_of


class MaskBlock(nn.Module):
    """V_out = ReLU(LN(W_i (V_mask ⊙ x))), V_mask = W_d2 ReLU(W_d1 V_emb + b_1) + b_2 (Eq. 1, 6-9),
    then dropout at rate ``dropout`` in training (none at 0).

    ``forward(x, v_emb)``: x (B, input_dim) is what the block masks (LN_EMB(V_emb), V_emb itself
    without the embedding norm, or a block output); v_emb (B, mask_input_dim) is the raw V_emb.
    Returns (B, output_dim).
    """

    def __init__(
        self,
        input_dim: int,
        mask_input_dim: int,
        output_dim: int,
        reduction_ratio: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.mask = nn.Sequential(
            nn.Linear(mask_input_dim, reduction_ratio * input_dim),  # aggregation, W_d1
            nn.ReLU(),
            nn.Linear(reduction_ratio * input_dim, input_dim),  # projection, W_d2
        )
        self.hidden = nn.Linear(input_dim, output_dim, bias=False)  # W_i
        self.norm = nn.LayerNorm(output_dim)  # LN_HID
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, v_emb: Tensor) -> Tensor:
        out = torch.relu(self.norm(self.hidden(self.mask(v_emb) * x)))
        return self.dropout(out)  # (B, output_dim)


@dataclass(frozen=True, kw_only=True)
class MaskNetConfig:
    embedding_dim: int | dict[str, int] = 16  # per-field widths: equal, or aligned
    embedding_align_dim: int | None = None  # K: project every field to width K (spec 4.3)
    structure: Literal["parallel", "serial"] = "parallel"
    num_blocks: int = 3
    block_dim: int = 64  # output width of every MaskBlock
    reduction_ratio: int = 1  # r: aggregation width / projection width of each mask
    hidden_dims: tuple[int, ...] = (400, 400, 400)  # MLP after the blocks; () : output layer only
    dropout: float = 0.0  # in the MLP
    block_dropout: float = 0.0  # after each MaskBlock
    embedding_norm: bool = True  # LN_EMB on the blocks' input; false: V_emb as it is
    batch_norm: bool = True
    embedding_init_std: float | None = 1e-4  # N(0, std^2) for all embeddings; None: xavier

    # slimctr tune: the generic keys and the mask blocks
    search_space: ClassVar[tuple[Param, ...]] = (
        *generic_space_of("embedding_dim", "hidden_dims", "dropout"),
        Int("num_blocks", 1, 4),
        Choice("block_dim", (32, 50, 64, 128)),
    )

    def __post_init__(self) -> None:
        check_optional_int("embedding_align_dim", self.embedding_align_dim, minimum=1)
        aligned = self.embedding_align_dim is not None  # unequal widths are projected
        check_embedding_dim("embedding_dim", self.embedding_dim, per_field=aligned)
        check_choice("structure", self.structure, ("parallel", "serial"))
        check_int("num_blocks", self.num_blocks, minimum=1)
        check_int("block_dim", self.block_dim, minimum=1)
        check_int("reduction_ratio", self.reduction_ratio, minimum=1)
        check_hidden_dims("hidden_dims", self.hidden_dims, allow_empty=True)
        check_dropout("dropout", self.dropout)
        check_dropout("block_dropout", self.block_dropout)
        check_bool("embedding_norm", self.embedding_norm)
        check_bool("batch_norm", self.batch_norm)
        check_init_std("embedding_init_std", self.embedding_init_std)


@register("masknet", MaskNetConfig, "MaskNet (Wang et al. 2021): MaskBlocks, serial or parallel")
class MaskNet(nn.Module):
    def __init__(self, schema: Schema, config: MaskNetConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = FieldEmbedding(
            schema,
            config.embedding_dim,
            init_std=config.embedding_init_std,
            align_dim=config.embedding_align_dim,
        )
        width = self.embedding.output_dim  # D
        field_width = width // self.embedding.num_fields
        self.embedding_norm = nn.LayerNorm(field_width) if config.embedding_norm else None  # LN_EMB
        self.serial = config.structure == "serial"
        blocks = []
        for index in range(config.num_blocks):
            block_input = config.block_dim if self.serial and index > 0 else width
            block = MaskBlock(
                block_input, width, config.block_dim, config.reduction_ratio, config.block_dropout
            )
            blocks.append(block)
        self.blocks = nn.ModuleList(blocks)
        mlp_input = config.block_dim * (1 if self.serial else config.num_blocks)
        self.mlp = MLP(
            mlp_input, config.hidden_dims, config.dropout, config.batch_norm, output_dim=1
        )

    def forward(self, batch: Batch) -> Tensor:
        embeddings = self.embedding(batch)  # (B, F, d)
        v_emb = embeddings.flatten(1)  # (B, D)
        block_input = v_emb  # LN_EMB(V_emb) unless embedding_norm is off: (B, D)
        if self.embedding_norm is not None:
            block_input = self.embedding_norm(embeddings).flatten(1)
        if self.serial:
            hidden = block_input
            for block in self.blocks:
                hidden = block(hidden, v_emb)  # (B, block_dim)
        else:
            hidden = torch.cat([block(block_input, v_emb) for block in self.blocks], dim=1)
        return self.mlp(hidden).squeeze(1)  # (B,)
