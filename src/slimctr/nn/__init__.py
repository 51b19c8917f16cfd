"""Reusable layers: field embeddings, MLP, cross networks, factorisation-machine terms."""

from slimctr.nn.cross import CrossLayerV1, CrossLayerV2, CrossNetwork
from slimctr.nn.embedding import FieldEmbedding, set_sparse_gradients
from slimctr.nn.fm import LinearTerm, fm_second_order
from slimctr.nn.mlp import MLP

__all__ = [
    "MLP",
    "CrossLayerV1",
    "CrossLayerV2",
    "CrossNetwork",
    "FieldEmbedding",
    "LinearTerm",
    "fm_second_order",
    "set_sparse_gradients",
]
