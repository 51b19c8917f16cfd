"""Pruned fields' id-to-row maps as a bundle stores them: one bit per feature id.

A field embedding that keeps some rows of a field (``FieldSpec.kept_rows``: a model retrained
after OptEmbed or OptFS pruned values) maps each id to its row with ``row_index``, an int32 per
id in memory (-1: no row, the id embeds as zeros). The kept ids are increasing and row i holds
the i-th of them (``FieldEmbedding.set_kept``), so the map is given by which ids are kept:
``pack_maps`` writes each field's map as ``np.packbits`` of "kept", on whole bytes, and
``unpack_maps`` counts the kept ids back into rows. A field of n_f ids then stores
ceil(n_f / 8) bytes, not 4 n_f; ``map_bytes`` counts that, and ``run.model_size`` and
``Plan.index_bytes`` report it (dimension-search spec 1.4). A bundle written before the maps
were packed holds them as int32, which ``unpack_maps`` takes as they are.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from slimctr.errors import SlimctrError
from slimctr.nn.embedding import FieldEmbedding, field_embeddings

MAP = "row_index"


def pruned_embeddings(model: nn.Module) -> dict[str, FieldEmbedding]:
    """The field embeddings of ``model`` with pruned fields, by state-dict prefix."""
    return {prefix: e for prefix, e in field_embeddings(model).items() if e.pruned_fields}


def map_bytes(embedding: FieldEmbedding) -> int:
    """The bytes a bundle stores for ``embedding``'s id-to-row maps: a bit per id, each field
    on whole bytes."""
    return sum(math.ceil(embedding.row_map(n).numel() / 8) for n in embedding.pruned_fields)


def pack_maps(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` (``model``'s) with each pruned field's map as a bit per id."""
    packed = dict(state)
    for prefix, embedding in pruned_embeddings(model).items():
        bits = [np.packbits(embedding.row_map(n).numpy() >= 0) for n in embedding.pruned_fields]
        packed[f"{prefix}{MAP}"] = torch.from_numpy(np.concatenate(bits))
    return packed


def unpack_maps(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The int32 maps of ``model``'s pruned fields from ``pack_maps``'s bits (int32 maps are
    kept as they are); an error when the bits do not fit the fields."""
    unpacked = dict(state)
    for prefix, embedding in pruned_embeddings(model).items():
        stored = state.get(f"{prefix}{MAP}")
        if stored is None or stored.dtype == torch.int32:
            continue  # missing: loading says so; int32: an older bundle's map
        sizes = [embedding.row_map(n).numel() for n in embedding.pruned_fields]
        if stored.dtype != torch.uint8 or stored.numel() != sum(math.ceil(s / 8) for s in sizes):
            raise SlimctrError(f"the id-to-row maps of {prefix or 'the embedding '}do not fit")
        maps, offset = [], 0
        for name, size in zip(embedding.pruned_fields, sizes, strict=True):
            width = math.ceil(size / 8)
            kept = np.unpackbits(stored[offset : offset + width].numpy(), count=size).astype(bool)
            offset += width
            rows = int((embedding.row_map(name) >= 0).sum())  # the schema's kept_rows
            if int(kept.sum()) != rows:
                raise SlimctrError(
                    f"field {name!r} keeps {int(kept.sum())} ids in the stored map and "
                    f"{rows} rows in its table"
                )
            maps.append(np.where(kept, np.cumsum(kept) - 1, -1).astype(np.int32))
        unpacked[f"{prefix}{MAP}"] = torch.from_numpy(np.concatenate(maps))
    return unpacked
