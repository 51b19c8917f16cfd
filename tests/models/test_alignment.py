"""Per-field embedding widths in every model; models that stack them use the alignment layer.

Models that stack field embeddings to (B, F, d) take ``embedding_align_dim=K`` (GDCN spec 4.3,
the Dimension Alignment Layer); models that concatenate them take per-field widths as they are.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from slimctr.config import from_dict
from slimctr.errors import SlimctrError
from slimctr.models import MODELS
from slimctr.training.run import model_size
from tests.models.make_golden import tiny_batch, tiny_schema

PLAN = {"c0": 4, "n0": 2, "c1": 3, "c2": 6, "n1": 1}  # a per-field plan for tiny_schema()
K = 5


def _keys(name: str) -> set[str]:
    return {f.name for f in dataclasses.fields(MODELS[name].config)}


STACKING = sorted(name for name in MODELS if "embedding_align_dim" in _keys(name))
CONCATENATING = sorted(name for name in MODELS if {"embedding_dim"} - _keys(name) == set())
CONCATENATING = [name for name in CONCATENATING if name not in STACKING]


def _build(name: str, **changes: object) -> nn.Module:
    entry = MODELS[name]
    torch.manual_seed(0)
    return entry.model(tiny_schema(), entry.config(**changes))


def test_the_models_that_stack_field_embeddings_have_the_key() -> None:
    assert STACKING == ["autoint", "deepfm", "fibinet", "fm", "fwfm", "masknet", "xdeepfm"]
    assert "dnn" in CONCATENATING and "dcnv2" in CONCATENATING


@pytest.mark.parametrize("name", CONCATENATING)
def test_concatenating_models_take_per_field_widths_as_they_are(name: str) -> None:
    model = _build(name, embedding_dim=PLAN)
    assert model(tiny_batch()).shape == (8,)


@pytest.mark.parametrize("name", STACKING)
def test_aligned_model_trains_with_unequal_widths(name: str) -> None:
    model = _build(name, embedding_dim=PLAN, embedding_align_dim=K).train()
    batch = tiny_batch()
    embedding = model.embedding
    assert embedding.field_dims == tuple(PLAN[f] for f in embedding.field_names)
    assert embedding(batch).shape == (8, 5, K)  # every field, numeric ones too, is K wide
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(2):
        optimizer.zero_grad()
        logits = model(batch)
        assert logits.shape == (8,)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)
        loss.backward()
        for parameter_name, parameter in model.named_parameters():
            assert parameter.grad is not None, f"{name}: {parameter_name} got no gradient"
            assert torch.isfinite(parameter.grad).all(), f"{name}: {parameter_name}"
        assert embedding.alignment.weight.grad.abs().sum() > 0
        optimizer.step()
        losses.append(loss.item())
    assert losses[1] != losses[0]


@pytest.mark.parametrize("name", STACKING)
def test_aligned_size_counts_the_projections(name: str) -> None:
    """GDCN spec 10.13: the alignment layer's sum_f d_f K parameters are in the reported size.

    Without the layer the plan's model would be the K-wide model with tables of widths d_f:
    n_f (d_f - K) more table parameters per field (n_f: vocabulary size, 1 if numeric).
    """
    schema = tiny_schema()
    rows = {f.name: f.vocab_size if f.kind == "categorical" else 1 for f in schema.fields}
    unaligned = model_size(_build(name, embedding_dim=K))["num_params"]
    unaligned += sum(rows[f] * (PLAN[f] - K) for f in PLAN)
    aligned = model_size(_build(name, embedding_dim=PLAN, embedding_align_dim=K))
    assert aligned["num_params"] == unaligned + sum(PLAN.values()) * K


@pytest.mark.parametrize("name", STACKING)
def test_unequal_widths_without_the_key_name_the_fields_and_the_fix(name: str) -> None:
    message = (
        r"^model\.embedding_dim must be one width for all fields in this model, got "
        r"width 1: n1; width 2: n0; width 3: c1; width 4: c0; width 6: c2 "
        r"\(use equal widths, or set model\.embedding_align_dim=K"
    )
    with pytest.raises(SlimctrError, match=message):
        MODELS[name].config(embedding_dim=PLAN)


@pytest.mark.parametrize("name", STACKING)
def test_aligned_config_loads_from_plain_data(name: str) -> None:
    config_class = MODELS[name].config
    config = from_dict(config_class, {"embedding_dim": PLAN, "embedding_align_dim": K})
    assert (config.embedding_dim, config.embedding_align_dim) == (PLAN, K)
    with pytest.raises(SlimctrError, match=r"^model\.embedding_align_dim "):
        from_dict(config_class, {"embedding_dim": PLAN, "embedding_align_dim": 0})
