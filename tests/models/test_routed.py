"""The routed model (an iHAS-style search's result): each sample gets its group model's logit,
the router's weights do not train, and bad settings are one-line errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from slimctr.data.batch import Batch
from slimctr.errors import SlimctrError
from slimctr.models.routed import Routed, RoutedConfig
from slimctr.schema import OOV_ID
from slimctr.training.run import model_size
from tests.models.make_golden import tiny_batch, tiny_schema

TWO = RoutedConfig(
    backbone="dnn",
    experts=({"embedding_dim": 4, "hidden_dims": (8,)}, {"embedding_dim": 2, "hidden_dims": (8,)}),
    router_dim=2,
    router_hidden=4,
    router_blocks=2,
)


def _routed() -> Routed:
    """Two groups whose centroids are the gate patterns of two samples that differ."""
    torch.manual_seed(0)
    model = Routed(tiny_schema(), TWO).eval()
    gates = (model.router.logits(tiny_batch()) > 0).flatten(1).float()
    other = next(i for i in range(1, len(gates)) if not torch.equal(gates[i], gates[0]))
    with torch.no_grad():
        model.router.centroids.copy_(torch.stack([gates[0], gates[other]]))
    return model


def test_each_sample_gets_the_logit_of_the_group_its_gates_are_nearest_to():
    model, batch = _routed(), tiny_batch()
    gates = (model.router.logits(batch) > 0).flatten(1).float()
    distances = ((gates[:, None] - model.router.centroids[None]) ** 2).sum(-1)
    groups = model.router.route(batch)
    assert torch.equal(groups, distances.argmin(dim=1)) and set(groups.tolist()) == {0, 1}
    logits = model(batch)
    for group, expert in enumerate(model.experts):
        rows = groups == group
        assert torch.allclose(logits[rows], expert.eval()(batch)[rows], atol=1e-6)


def test_each_group_model_has_its_widths_and_the_size_counts_them_all_and_the_router():
    model = _routed()
    assert [e.embedding.field_dims[0] for e in model.experts] == [4, 2]
    rows = sum(f.vocab_size if f.kind == "categorical" else 1 for f in tiny_schema().fields)
    assert model_size(model)["embedding_params"] == rows * (4 + 2 + 2)  # two groups and the router
    assert all(not p.requires_grad for p in model.router.parameters())


def test_the_router_reads_the_values_past_its_rows_as_oov_and_stores_only_its_rows():
    config = dataclasses.replace(TWO, router_rows={"c1": 3, "c2": 2})
    torch.manual_seed(0)
    model = Routed(tiny_schema(), config).eval()
    batch = tiny_batch()
    ids = batch.categorical.clone()
    ids[:, 1] = torch.where(ids[:, 1] < 3, ids[:, 1], OOV_ID)  # c1 keeps ids 0-2
    ids[:, 2] = torch.where(ids[:, 2] < 2, ids[:, 2], OOV_ID)  # c2 only PAD and OOV
    as_oov = Batch(ids, batch.numeric, batch.labels)
    assert not torch.equal(ids, batch.categorical)
    assert torch.equal(model.router.logits(batch), model.router.logits(as_oov))
    assert model.router.embedding.table("c1").shape[0] == 3
    rows = {"c0": 5, "n0": 1, "c1": 7, "c2": 11, "n1": 1}
    router = {**rows, "c1": 3, "c2": 2}
    assert model_size(model)["embedding_params"] == 6 * sum(rows.values()) + 2 * sum(
        router.values()
    )


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [({"n0": 2}, "names 'n0', not a categorical field"), ({"c0": 6}, "more than the field's 5")],
)
def test_router_rows_must_name_a_categorical_field_within_its_rows(rows, fragment):
    with pytest.raises(SlimctrError, match=fragment):
        Routed(tiny_schema(), dataclasses.replace(TWO, router_rows=rows))


def test_a_group_with_one_sample_in_a_training_batch_still_trains():
    model = _routed().train()
    batch = tiny_batch()
    one = Batch(batch.categorical[:1], batch.numeric[:1], batch.labels[:1])
    model.router.centroids[0].fill_(2.0)  # nothing is near group 0 any more
    assert model(one).shape == (1,)
    model(batch).sum().backward()
    assert any(p.grad is not None for p in model.experts[1].parameters())


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"backbone": "dcn_v9"}, "model.backbone must be one of"),
        ({"experts": ({"hidden_dims": (0,)},)}, r"model.experts\[0\]: .*hidden_dims"),
        ({"experts": ({"width": 3},)}, r"model.experts\[0\]: .*width"),
        ({"router_rows": {"c0": 1}}, r"model.router_rows\['c0'\] must be an int >= 2"),
    ],
)
def test_bad_settings_name_the_key(change, fragment):
    with pytest.raises(SlimctrError, match=fragment):
        RoutedConfig(**change)
