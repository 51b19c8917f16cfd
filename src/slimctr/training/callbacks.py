"""The trainer's extension point: whatever acts inside training without being the optimisation.

The progress bar, checkpointing and early stopping below, and data parallelism
(``slimctr.training.distributed``), are callbacks; a search
method's stages (initial weights, frozen parameters, masks) and tuning's pruning plug in the same
way, instead of editing ``Trainer.fit``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

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


class EarlyStopping(Callback):
    """Stop once ``patience`` epochs have passed without a new best validation AUC.

    Checked at the start of ``fit`` too, so a resumed run that had already stopped stays stopped.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_fit_start(self, trainer: Trainer) -> None:
        self._check(trainer)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._check(trainer)

    def _check(self, trainer: Trainer) -> None:
        if trainer.epoch - trainer.best_epoch > self.patience:
            trainer.stop = True


class Checkpoint(Callback):
    """Hands the trainer's whole state to ``save`` at the end of every epoch."""

    def __init__(self, save: Callable[[dict[str, Any]], None]) -> None:
        self.save = save

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.save(trainer.state_dict())


class ProgressBar(Callback):
    """One progress line per epoch on stderr: batches, loss, samples per second, time left.

    Redrawn at most twice a second, and only at the end of an epoch when stderr is not a terminal.
    ``title`` (e.g. which plan is training) starts every line.
    """

    def __init__(self, stream: TextIO | None = None, title: str = "") -> None:
        self.stream = stream or sys.stderr
        self.title = title
        self.live = self.stream.isatty()

    def on_epoch_start(self, trainer: Trainer) -> None:
        self.started = time.perf_counter()
        self.shown, self.done, self.rows, self.loss = 0.0, 0, 0, 0.0

    def on_step_end(self, trainer: Trainer, batch: Batch, loss: float) -> None:
        self.done, self.rows = self.done + 1, self.rows + len(batch)
        self.loss += loss * len(batch)
        total = len(trainer.loader)
        elapsed = time.perf_counter() - self.started
        last = self.done == total
        if not last and (not self.live or elapsed - self.shown < 0.5):
            return
        self.shown = 0.0 if last else elapsed
        width = 24
        filled = width * self.done // total
        rate = self.rows / max(elapsed, 1e-9)
        left = elapsed / self.done * (total - self.done)
        title = f"{self.title}: " if self.title else ""
        self.stream.write(
            f"\r{title}epoch {trainer.epoch + 1} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done}/{total} loss {self.loss / self.rows:.4f}  {rate:,.0f} samples/s  "
            f"ETA {left:.0f}s " + ("\n" if last else "")
        )
        self.stream.flush()
