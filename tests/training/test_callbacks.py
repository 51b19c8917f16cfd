"""The trainer's callback interface: what later work (DDP, search stages, tuning) plugs into."""

from __future__ import annotations

import pytest
import torch

from slimctr.runconfig import build_model, resolve_config
from slimctr.training.callbacks import Callback, Checkpoint
from slimctr.training.trainer import Trainer
from tests.training.test_training import FAST, store  # noqa: F401 (a fixture)


def _trainer(store, callbacks, extra=()):  # noqa: F811
    config = resolve_config("dcnv2", overrides=[*FAST, *extra], threads=1)
    return Trainer(
        build_model(config, store.schema), store, config.train, seed=0, callbacks=callbacks
    )


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer):
        self.calls.append("fit_start")

    def on_epoch_start(self, trainer):
        self.calls.append(f"epoch_start {trainer.epoch}")

    def on_step_end(self, trainer, batch, loss):
        if not self.calls[-1].startswith("step"):
            self.calls.append("step")

    def on_epoch_end(self, trainer, record):
        self.calls.append(f"epoch_end {record['epoch']} {trainer.epoch}")

    def on_fit_end(self, trainer):
        self.calls.append("fit_end")


def test_hooks_run_in_order(store):  # noqa: F811
    recorder = Recorder()
    _trainer(store, [recorder], ["train.epochs=2"]).fit()
    assert recorder.calls == [
        "fit_start",
        "epoch_start 0",
        "step",
        "epoch_end 1 1",
        "epoch_start 1",
        "step",
        "epoch_end 2 2",
        "fit_end",
    ]


def test_a_callback_can_stop_training(store):  # noqa: F811
    class StopAfterFirst(Callback):
        def on_epoch_end(self, trainer, record):
            trainer.stop = True

    trainer = _trainer(store, [StopAfterFirst()])
    trainer.fit()
    assert len(trainer.history) == 1


def test_initial_weights_and_frozen_parameters_through_a_callback(store):  # noqa: F811
    """A search method's reset rule: hand in initial weights and freeze some parameters."""
    donor = _trainer(store, []).model
    initial = {k: v.clone() for k, v in donor.state_dict().items()}
    frozen = "embedding.fused_table.weight"
    assert frozen in initial

    class Rewind(Callback):
        def on_fit_start(self, trainer):
            trainer.model.load_state_dict(initial)
            trainer.model.get_parameter(frozen).requires_grad_(False)

    trainer = _trainer(store, [Rewind()])
    trainer.fit()
    trained = trainer.model.state_dict()
    assert torch.equal(trained[frozen], initial[frozen])
    moved = [k for k in initial if k != frozen and not torch.equal(trained[k], initial[k])]
    assert moved  # everything else trained


def test_checkpoint_hands_over_the_whole_state_every_epoch(store):  # noqa: F811
    saved = []
    trainer = _trainer(store, [Checkpoint(saved.append)], ["train.epochs=2"])
    trainer.fit()
    assert [s["epoch"] for s in saved] == [1, 2]
    fresh = _trainer(store, [], ["train.epochs=2"])
    fresh.load_state_dict(saved[0])
    assert fresh.epoch == 1 and fresh.history == saved[0]["history"]


@pytest.mark.parametrize("patience", [1, 2])
def test_early_stopping_is_a_callback_that_survives_resume(store, patience, monkeypatch):  # noqa: F811
    scores = iter([0.9, 0.8, 0.7, 0.6, 0.5])
    monkeypatch.setattr(Trainer, "_train_epoch", lambda self: 0.5)
    monkeypatch.setattr(
        Trainer, "evaluate", lambda self, split: {"auc": next(scores), "logloss": 1}
    )
    saved = []
    extra = ["train.epochs=5", f"train.early_stopping_patience={patience}"]
    trainer = _trainer(store, [Checkpoint(saved.append)], extra)
    trainer.fit()
    assert len(trainer.history) == patience + 1
    resumed = _trainer(store, [], extra)
    resumed.load_state_dict(saved[-1])
    resumed.fit()  # already stopped: no further epoch
    assert len(resumed.history) == patience + 1
