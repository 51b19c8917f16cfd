"""OptFS end to end on a tiny store: dimension-search spec 8, properties 14 and 15 (the gate
primitives' properties 11-13 are in test_gates)."""

from __future__ import annotations

import math

import pytest
import torch

from slimctr.data.loader import BatchLoader
from slimctr.runconfig import build_model, resolve_config
from slimctr.search import Start, train_plan
from slimctr.search.gates import temperature
from slimctr.search.optfs import GatedRows, GateSearch, OptFS, OptFSConfig
from slimctr.search.runner import StartFrom, field_embedding
from slimctr.search.stages import supernet
from slimctr.training import run
from slimctr.training.trainer import Trainer

# Gates that start just above zero close within a short search, so that values are dropped.
PRUNING = OptFSConfig(m0=0.01, strength=1e-3, search_epochs=3, rewind_epoch=1)


@pytest.fixture(scope="module")
def found(runs, tmp_path_factory):
    start = Start.from_run(runs / "dcnv2")
    start = Start(start.config, start.store)
    return start, OptFS(PRUNING).fit(start, tmp_path_factory.mktemp("optfs"))


def test_closed_gates_drop_values_and_the_retrained_model_stores_only_the_rest(found, tmp_path):
    start, searcher = found
    plan = searcher.plan_
    assert plan.kept and plan.feature_ratio < 1
    assert set(plan.widths.values()) == {8} and not {"I1", "I2"} & set(plan.kept)
    metrics = train_plan(plan, start, tmp_path / "run", initial=searcher.initial_)
    embedding = field_embedding(run.load_model(tmp_path / "run").module, "test")
    for name, ids in plan.kept.items():
        assert embedding.table(name).shape == (len(ids), 8)
        assert embedding.kept_ids(name).tolist() == ids.tolist()
    assert metrics["embedding_bytes"] == plan.embedding_bytes


def test_retraining_starts_from_the_rewind_checkpoint_with_the_scale_folded_in(found):
    start, searcher = found
    plan, rewind = searcher.plan_, searcher.initial_
    assert rewind is not None
    source, source_embedding = supernet(start, "optfs")
    source.load_state_dict(rewind)
    schema = start.store.schema.with_kept_rows({n: len(i) for n, i in plan.kept.items()})
    model = build_model(start.config, schema)
    trainer = Trainer(model, start.store, start.config.train, seed=0)
    StartFrom(plan, source).on_fit_start(trainer)
    # every weight but the tables is the checkpoint's; the tables are its kept rows
    embedding = field_embedding(model, "test")
    given = source.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("embedding."):
            assert torch.equal(value, given[key]), key
    for name, ids in plan.kept.items():
        rows = source_embedding.table(name).detach()[torch.from_numpy(ids)]
        assert torch.equal(embedding.table(name).detach(), rows)


def test_the_rewind_checkpoint_is_the_weights_at_the_start_of_its_epoch(found, tmp_path):
    start, _ = found
    at_start = OptFS(OptFSConfig(m0=0.01, strength=1e-3, search_epochs=2, rewind_epoch=0,
                                 scaled=False))  # fmt: skip
    at_start.fit(start, tmp_path)
    fresh, _ = supernet(start, "optfs")  # the seed's initial weights
    assert at_start.initial_ is not None
    assert all(torch.equal(v, at_start.initial_[k]) for k, v in fresh.state_dict().items())


def test_the_scaled_hard_gate_is_folded_into_the_kept_rows(found, tmp_path):
    start, scaled = found
    unscaled = OptFS(OptFSConfig(**{**PRUNING.__dict__, "scaled": False})).fit(start, tmp_path)
    assert scaled.initial_ is not None and unscaled.initial_ is not None
    key = "embedding.fused_table.weight"
    factor = 1 + math.exp(-PRUNING.m0)  # 1 / sigma(m0)
    assert torch.allclose(scaled.initial_[key], unscaled.initial_[key] * factor)
    assert unscaled.plan_.kept.keys() == scaled.plan_.kept.keys()


@pytest.mark.parametrize("model", ["dcnv2", "gdcn_p", "deepfm", "dnn", "xdeepfm"])
def test_every_backbone_gates_its_rows_with_the_scheduled_temperature(found, model):
    start, _ = found
    config = resolve_config(model, overrides=["model.embedding_dim=8"])
    backbone = build_model(config, start.store.schema)
    embedding = field_embedding(backbone, "optfs")
    batch = next(iter(BatchLoader(start.store, "train", batch_size=32)))
    plain = embedding(batch).detach()
    rows = GatedRows(embedding, PRUNING)
    with torch.no_grad():
        rows.gates.logits.uniform_(-0.01, 0.02)
    seen = []

    def hook(stacked, batch):
        gated = rows(stacked, batch)
        seen.append(gated.detach())
        return gated

    embedding.row_hook = hook
    search = GateSearch(rows, PRUNING, lr=1e-3)
    trainer = Trainer(backbone, start.store, config.train, seed=0)
    categorical = [embedding.field_names.index(n) for n in ("C1", "C2", "C3", "C4")]
    for epoch in range(PRUNING.search_epochs):
        trainer.epoch = epoch
        search.on_epoch_start(trainer)
        tau = temperature(epoch, PRUNING.search_epochs, PRUNING.final_temperature)
        assert rows.gates.tau == tau
        seen.clear()
        backbone(batch)
        assert len(seen) == 1  # the backbone's forward goes through the gates
        logits = rows.gates.logits[batch.categorical.long() + rows.offsets].detach()
        gate = torch.sigmoid(tau * logits) / torch.sigmoid(torch.tensor(PRUNING.m0))
        expected = plain[:, categorical] * gate.unsqueeze(-1)
        assert torch.allclose(seen[0][:, categorical], expected, atol=1e-6)
