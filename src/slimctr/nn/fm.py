"""Factorisation-machine terms (Rendle 2010): the linear part and the pairwise interactions."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slimctr.data.batch import Batch
from slimctr.nn.embedding import FieldEmbedding
from slimctr.schema import Schema


def fm_second_order(embeddings: Tensor) -> Tensor:
    """sum_{i<j} <e_i, e_j> = 0.5 * sum_k [(sum_f e_fk)^2 - sum_f e_fk^2].

    The pairwise term of an FM in O(F d) instead of O(F^2 d) (Rendle, ICDM 2010, Lemma 3.1).
    ``embeddings`` is (B, F, d); returns (B,).
    """
    square_of_sum = embeddings.sum(dim=1).pow(2)  # (B, d)
    sum_of_squares = embeddings.pow(2).sum(dim=1)  # (B, d)
    return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1)


class LinearTerm(nn.Module):
    """The first-order term w_0 + sum_f w_f(x_f) of LR and FM.

    A categorical field contributes a learned scalar per id, a numeric field w_f * x_f: a
    ``FieldEmbedding`` of width 1, summed over fields. w_0 starts at zero. It keeps every row
    when a search prunes the model's embedding (OptEmbed does not prune first-order weights).
    """

    def __init__(self, schema: Schema, init_std: float | None = None) -> None:
        super().__init__()
        self.weights = FieldEmbedding(schema.unpruned(), 1, init_std=init_std)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> Tensor:
        return self.weights.flat(batch).sum(dim=1) + self.bias  # (B,)
