"""Reusable layers: field embeddings and their alignment, MLP, cross networks, FM terms."""

from slimctr.nn.align import DimensionAlignment
from slimctr.nn.cross import CrossLayerV1, CrossLayerV2, CrossNetwork
from slimctr.nn.embedding import FieldEmbedding, set_sparse_gradients
from slimctr.nn.fm import LinearTerm, fm_second_order
from slimctr.nn.mlp import MLP

__all__ = [
    "MLP",
    "CrossLayerV1",
    "CrossLayerV2",
    "CrossNetwork",
    "DimensionAlignment",
    "FieldEmbedding",
    "LinearTerm",
    "fm_second_order",
    "set_sparse_gradients",
]
