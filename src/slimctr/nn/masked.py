"""Masked tables as a bundle stores them: the kept values and the mask packed to bits.

A field embedding whose ``entry_mask`` keeps single entries (a model retrained after PEP) would
store as many floats as a dense one if written as it lives in memory. ``pack_state`` writes each
such table as a 1-D tensor of its kept values (row-major order) and its mask as ``np.packbits``
bytes, one bit per entry; ``unpack_state`` rebuilds both for a model of the same schema. The
stored bytes, 4 per kept value plus ceil(entries / 8), are what ``stored_bytes`` counts and
``run.model_size`` reports (dimension-search spec 1.4.5).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from slimctr.errors import SlimctrError
from slimctr.nn.embedding import FieldEmbedding, field_embeddings


def masked_embeddings(model: nn.Module) -> dict[str, FieldEmbedding]:
    """The masked field embeddings of ``model`` by state-dict prefix (``"embedding."``)."""
    return {prefix: e for prefix, e in field_embeddings(model).items() if e.masked}


def stored_bytes(mask: Tensor) -> int:
    """Bytes of a float32 table stored as its kept values and a bit per entry."""
    return 4 * int(mask.sum()) + math.ceil(mask.numel() / 8)


def pack_state(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` (``model``'s) with each masked table as its kept values and packed mask."""
    packed = dict(state)
    for prefix in masked_embeddings(model):
        weight, mask = state[f"{prefix}fused_table.weight"], state[f"{prefix}entry_mask"]
        packed[f"{prefix}fused_table.weight"] = weight[mask].contiguous()
        packed[f"{prefix}entry_mask"] = torch.from_numpy(np.packbits(mask.flatten().numpy()))
    return packed


def unpack_state(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The full state of ``model`` from ``pack_state``'s; an error when the parts disagree."""
    unpacked = dict(state)
    for prefix, embedding in masked_embeddings(model).items():
        shape = embedding.entry_mask.shape
        bits, values = state.get(f"{prefix}entry_mask"), state.get(f"{prefix}fused_table.weight")
        if bits is None or values is None or bits.dtype != torch.uint8 or values.dim() != 1:
            raise SlimctrError(f"the weights lack the packed mask of {prefix}fused_table")
        count = math.prod(shape)
        if bits.numel() != math.ceil(count / 8):
            raise SlimctrError(f"the packed mask of {prefix}fused_table has the wrong size")
        flags = np.unpackbits(bits.numpy(), count=count).astype(bool).reshape(shape)
        mask = torch.from_numpy(flags)
        if int(mask.sum()) != values.numel():
            raise SlimctrError(
                f"{prefix}fused_table stores {values.numel()} values for a mask of "
                f"{int(mask.sum())}"
            )
        weight = torch.zeros(shape, dtype=values.dtype)
        weight[mask] = values
        unpacked[f"{prefix}fused_table.weight"], unpacked[f"{prefix}entry_mask"] = weight, mask
    return unpacked
