"""The trainer's extension point: whatever acts inside training without being the optimisation.

The progress bar, checkpointing, early stopping and data parallelism are callbacks; a search
method's stages (initial weights, frozen parameters, masks) and tuning's pruning plug in the same
way, instead of editing ``Trainer.fit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slimctr.data.batch import Batch

if TYPE_CHECKING:
    from slimctr.training.trainer import Trainer


class Callback:
    """Acts inside ``Trainer.fit``; every hook does nothing unless a subclass overrides it.

    Hooks run in the order the callbacks were given. A hook may read and change the trainer: its
    ``model``, ``optimizers``, ``epoch``, ``best_epoch``, ``history``, and ``stop`` (set it to end
    training after the current epoch).
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch of this ``fit`` (after ``load_state_dict`` when resuming)."""

    def on_epoch_start(self, trainer: Trainer) -> None:
        """Before the first batch of epoch ``trainer.epoch`` (0-based)."""

    def on_before_optimizer_step(self, trainer: Trainer, batch: Batch) -> None:
        """After the backward pass on ``batch``, before gradient clipping and the step."""

    def on_step_end(self, trainer: Trainer, batch: Batch, loss: float) -> None:
        """After the optimiser step on ``batch``; ``loss`` is that batch's training loss."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After validation; ``record`` is the epoch's history entry, ``trainer.epoch`` already
        counts the epoch as done."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch, before the best weights are restored."""
