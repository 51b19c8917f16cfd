"""Pruned fields' maps as a bundle stores them: a bit per id that rebuilds the int32 map
exactly, an older bundle's int32 map taken as it is, and bits that do not fit are errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimctr.errors import SlimctrError
from slimctr.nn.embedding import FieldEmbedding
from slimctr.nn.pruned import map_bytes, pack_maps, unpack_maps
from slimctr.schema import FieldSpec, Schema


def _model(sizes: dict[str, int], kept: dict[str, list[int]]) -> nn.Module:
    """A model holding one field embedding whose fields ``kept`` prune to those ids."""
    fields = tuple(FieldSpec(name=n, kind="categorical", vocab_size=s) for n, s in sizes.items())
    schema = Schema(label="y", fields=fields).with_kept_rows({n: len(i) for n, i in kept.items()})
    model = nn.Module()
    model.embedding = FieldEmbedding(schema, 2)
    for name, ids in kept.items():
        model.embedding.set_kept(name, ids)
    return model


@settings(max_examples=40, deadline=None)
@given(data=st.data(), sizes=st.lists(st.integers(2, 40), min_size=1, max_size=3))
def test_the_bits_rebuild_every_map_and_cost_a_bit_per_id(data, sizes):
    named = {f"f{i}": size for i, size in enumerate(sizes)}
    kept = {
        name: sorted(data.draw(st.sets(st.integers(0, size - 1), min_size=1)))
        for name, size in named.items()
    }
    source = _model(named, kept)
    state = source.state_dict()
    packed = pack_maps(source, state)
    bits = packed["embedding.row_index"]
    assert bits.dtype == torch.uint8 and bits.numel() == sum((s + 7) // 8 for s in sizes)
    assert map_bytes(source.embedding) == bits.numel()
    target = _model(named, {n: list(range(len(i))) for n, i in kept.items()})  # a fresh build
    target.load_state_dict(unpack_maps(target, packed))
    assert torch.equal(target.embedding.row_index, source.embedding.row_index)
    for name, ids in kept.items():
        assert target.embedding.kept_ids(name).tolist() == ids


def test_an_int32_map_of_an_older_bundle_is_taken_as_it_is():
    model = _model({"a": 9}, {"a": [1, 5]})
    state = model.state_dict()
    assert unpack_maps(model, state)["embedding.row_index"] is state["embedding.row_index"]


def test_bits_that_do_not_fit_the_fields_are_errors():
    model = _model({"a": 9}, {"a": [1, 5]})
    packed = pack_maps(model, model.state_dict())
    short = {**packed, "embedding.row_index": packed["embedding.row_index"][:1]}
    with pytest.raises(SlimctrError, match="do not fit"):
        unpack_maps(model, short)
    other = pack_maps(_model({"a": 9}, {"a": [1, 5, 7]}), {})
    with pytest.raises(SlimctrError, match="keeps 3 ids in the stored map and 2 rows"):
        unpack_maps(model, {**packed, **other})
