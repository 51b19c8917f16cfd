"""Training: Adam on BCE with logits; early stopping and LR plateau on validation AUC.

Protocol (GDCN spec section 3): after every epoch the validation split is scored; the model with
the best validation AUC is kept, the learning rate is divided by ``plateau_factor`` after
``plateau_patience`` epochs without improvement, training stops after
``early_stopping_patience`` such epochs, and the test split is scored once, at the best epoch.
An improvement is any rise of the best validation AUC, for the best epoch, early stopping and the
plateau alike; the plateau can be made stricter with ``plateau_threshold`` (an absolute AUC
margin; FuxiCTR uses 1e-6). Before 2026-11-27 the plateau used torch's default, a rise of more
than 1e-4 of the best value, and cut the learning rate of models that creep up slowly every epoch
(FM on Frappe stalled at 0.936 where BARS's FM, never cut, reaches 0.967).

Whatever acts inside training without being the optimisation itself is a ``Callback``: the
progress bar, checkpointing and early stopping are, and so will be data parallelism, a search
method's stages and tuning's pruning. A ``Checkpoint`` callback hands ``Trainer.state_dict()`` (the
model, optimisers, schedulers, RNG state and history) to whoever keeps it at the end of every
epoch; batches are drawn from ``(seed, epoch)``, so a run interrupted anywhere and resumed with
``load_state_dict`` ends with exactly the metrics of an uninterrupted run. The trainer itself
knows nothing about files.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from slimctr.data.batch import Batch
from slimctr.data.loader import BatchLoader
from slimctr.data.store import Store
from slimctr.errors import SlimctrError
from slimctr.metrics import auc, logloss_from_logits
from slimctr.nn.embedding import set_sparse_gradients
from slimctr.training.callbacks import Callback, EarlyStopping
from slimctr.training.distributed import ALONE, DataParallel, World

# The ``auto`` preset (TrainConfig's docstring and ``TrainConfig.for_rows``).
AUTO_EMBEDDING_L2 = 0.01
STEPS_PER_EPOCH = 100
MIN_BATCH, MAX_BATCH = 256, 4096
STEP_BUDGET = 20_000
MIN_EPOCHS, MAX_EPOCHS = 10, 200


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation settings: Adam 1e-3 on binary cross-entropy, and the preset's protocol.

    ``preset`` names the protocol, and fills the keys of ``PRESETS`` that a run does not set
    itself (``slimctr.runconfig.resolve_config`` applies it; the fields' defaults are ``auto``'s):

    - ``auto`` (the default, issue 16): settings meant to hold up on data nobody tuned for.
      Embedding L2 ``AUTO_EMBEDDING_L2`` (0.01, chosen by validation AUC on two generated click
      logs: docs/results/defaults_selection.md); BARS's schedule (the learning rate cut tenfold
      after every epoch without a new best validation AUC, stop after 2 such epochs in a row), which
      the BARS benchmark runs on every dataset and model; and a batch size and epoch budget
      chosen from the number of training rows (``for_rows``): ``batch_size`` and ``epochs`` are
      null until then, and a run records the numbers chosen.
    - ``paper`` (GDCN spec 3): batch 4096, at most 50 epochs, early stopping patience 5,
      plateau patience 3, no weight decay or embedding L2: the GDCN paper's protocol, and every
      default before issue 16.
    - ``reference_code``: as ``paper`` with patience 4, plateau patience 5 and weight decay 1e-6,
      as the GDCN reference code runs.

    ``precision``: ``bf16`` autocasts the forward pass to bfloat16 (the loss stays float32),
    ``fp32`` does not, and ``auto`` (the default) picks bf16 where the CPU has native bf16 matrix
    instructions (AMX or AVX512-BF16) and fp32 elsewhere (``resolve_precision``). A run records
    what ``auto`` became and keeps it when resumed, even on another kind of machine.

    ``embedding_optimizer`` and ``embedding_l2`` (issue 15; the measurements are in
    ``benchmarks/results/embedding_optimizer.md``):

    - ``adam`` (the default): dense gradients and ``torch.optim.Adam`` over whole tables, and
      ``embedding_l2`` penalises every row of every table every step (``embedding_l2 / 2 *
      ||E||^2`` of each table), as FuxiCTR and the BARS benchmark do. Every step reads and writes
      every table and its two moments, whatever the batch touched.
    - ``lazy_adam``: the tables get sparse gradients and ``torch.optim.SparseAdam`` updates only
      the rows the batch touched, with their Adam moments; rows the batch did not touch, and
      their moments, stay as they are. ``embedding_l2`` adds ``embedding_l2 * e`` to the
      gradient of every touched row e, once per step however often the batch uses it. A step
      costs the rows it touches, not the size of the tables.

    A touched row receives the same gradient in both, yet ``lazy_adam`` regularises rare rows
    less: ``adam`` keeps moving every row the batch did not touch (its L2 gradient and its Adam
    momentum carry on), so rarely seen rows shrink every step. On Frappe with BARS's settings
    ``lazy_adam`` loses about 0.0015 test AUC at BARS's strength and about 0.001 at the best
    strength tried, while it matches or beats ``adam`` on the synthetic default (no L2): it is
    not the default. The reported ``train_loss`` is the log loss alone, without the penalty.
    """

    preset: Literal["auto", "paper", "reference_code"] = "auto"
    epochs: int | None = None  # None: chosen from the training rows (for_rows)
    batch_size: int | None = None  # None: chosen from the training rows (for_rows)
    lr: float = 1e-3
    embedding_lr: float | None = None  # None: same as lr
    embedding_optimizer: Literal["adam", "lazy_adam"] = "adam"  # see the class docstring
    weight_decay: float = 0.0  # Adam weight decay on the dense (non-embedding) parameters
    embedding_l2: float = AUTO_EMBEDDING_L2  # L2 on the embedding rows, see above
    early_stopping_patience: int = 2
    plateau_patience: int = 0
    plateau_factor: float = 0.1
    plateau_threshold: float = 0.0  # a rise of more than this (absolute AUC) is an improvement
    min_lr: float = 0.0  # the plateau cuts never take the learning rate below this
    grad_clip_norm: float | None = None  # clip the global gradient norm to this; None: never
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # bf16: autocast the forward pass
    eval_batch_size: int = 16384

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "eval_batch_size", "early_stopping_patience")
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise SlimctrError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        non_negative = (
            "weight_decay",
            "embedding_l2",
            "plateau_patience",
            "plateau_threshold",
            "min_lr",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise SlimctrError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise SlimctrError(f"train.lr must be > 0, got {self.lr}")
        if self.embedding_lr is not None and self.embedding_lr <= 0:
            raise SlimctrError(f"train.embedding_lr must be > 0, got {self.embedding_lr}")
        if not 0 < self.plateau_factor <= 1:
            raise SlimctrError(f"train.plateau_factor must be in (0, 1], got {self.plateau_factor}")
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise SlimctrError(f"train.grad_clip_norm must be > 0, got {self.grad_clip_norm}")

    def for_rows(self, rows: int) -> TrainConfig:
        """This config with a null ``batch_size`` and ``epochs`` chosen for ``rows`` training rows.

        The batch is the power of two nearest below rows / ``STEPS_PER_EPOCH``, within
        [``MIN_BATCH``, ``MAX_BATCH``], so that an epoch has about 100 steps or more: with a
        100k-row log, batch 4096 gives 20 steps an epoch and models stop long before they have
        learned (issue 16). The epoch budget is ``STEP_BUDGET`` steps, within [``MIN_EPOCHS``,
        ``MAX_EPOCHS``] epochs; early stopping ends most runs well before it.

        >>> chosen = TrainConfig().for_rows(100_000)
        >>> chosen.batch_size, chosen.epochs
        (512, 103)
        >>> chosen = TrainConfig().for_rows(36_000_000)
        >>> chosen.batch_size, chosen.epochs
        (4096, 10)
        """
        batch = self.batch_size
        if batch is None:
            power = 2 ** math.floor(math.log2(max(rows / STEPS_PER_EPOCH, 1)))
            batch = min(max(power, MIN_BATCH), MAX_BATCH)
        epochs = self.epochs
        if epochs is None:
            steps = max(math.ceil(rows / batch), 1)
            epochs = min(max(math.ceil(STEP_BUDGET / steps), MIN_EPOCHS), MAX_EPOCHS)
        return replace(self, batch_size=batch, epochs=epochs)


def resolve_precision(requested: str) -> Literal["fp32", "bf16"]:
    """``requested``, with ``auto`` made ``bf16`` on a CPU with native bf16 matrix instructions
    (AMX-BF16 or AVX512-BF16; emulated bf16 is slower than fp32) and ``fp32`` elsewhere."""
    if requested in ("fp32", "bf16"):
        return requested  # type: ignore[return-value]
    return "bf16" if _cpu_flags() & {"amx_bf16", "avx512_bf16"} else "fp32"


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags, as Linux lists them (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    lines = (line for line in text.splitlines() if line.startswith("flags"))
    return frozenset(next(lines, ":").split(":", 1)[1].split())


_PAPER = {"epochs": 50, "batch_size": 4096, "embedding_l2": 0.0}
PRESETS: dict[str, dict[str, Any]] = {
    "auto": {
        "epochs": None,
        "batch_size": None,
        "embedding_l2": AUTO_EMBEDDING_L2,
        "early_stopping_patience": 2,
        "plateau_patience": 0,
        "weight_decay": 0.0,
    },
    "paper": {**_PAPER, "early_stopping_patience": 5, "plateau_patience": 3, "weight_decay": 0.0},
    "reference_code": {
        **_PAPER,
        "early_stopping_patience": 4,
        "plateau_patience": 5,
        "weight_decay": 1e-6,
    },
}


class Trainer:
    """Fits one model on one store; what else happens during training is its callbacks'.

    ``EarlyStopping`` with the config's patience always runs, after the given ``callbacks``.
    """

    def __init__(
        self,
        model: nn.Module,
        store: Store,
        config: TrainConfig,
        *,
        seed: int,
        callbacks: Sequence[Callback] = (),
        world: World = ALONE,
    ) -> None:
        self.model = model
        self.store = store
        config = config.for_rows(len(store.split("train")))
        assert config.epochs is not None and config.batch_size is not None  # for_rows chose
        self.config, self.epochs = config, config.epochs
        self.seed = seed
        self.world = world
        parallel = [DataParallel(world)] if world.size > 1 else []
        self.callbacks = [*parallel, *callbacks, EarlyStopping(config.early_stopping_patience)]
        self.bf16 = resolve_precision(config.precision) == "bf16"
        if len(store.split("valid")) == 0:
            raise SlimctrError(
                f"{store.path} has an empty validation split; early stopping and "
                "the best-epoch choice need one (prepare with --split)"
            )
        set_sparse_gradients(model, config.embedding_optimizer == "lazy_adam")
        embedding, dense = _split_parameters(model)
        self.optimizers = _optimizers(embedding, dense, config)
        # One plateau schedule per optimiser; all see the same metric, so they cut LR together.
        self.schedulers = [
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="max",
                factor=config.plateau_factor,
                patience=config.plateau_patience,
                threshold=config.plateau_threshold,
                threshold_mode="abs",
                min_lr=config.min_lr,
            )
            for optimizer in self.optimizers
        ]
        self.embedding_tables = embedding
        self.loader = BatchLoader(
            store,
            "train",
            batch_size=config.batch_size,
            shuffle=True,
            seed=seed,
            shard=(world.rank, world.size),
        )
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"epoch": -1, "auc": -math.inf, "state": None}
        self.epoch = 0
        self.stop = False

    @property
    def best_epoch(self) -> int:
        """0-based index of the best epoch so far; -1 before the first."""
        return int(self.best["epoch"])

    def fit(self) -> dict[str, Any]:
        """Train until a callback stops it or ``epochs``; returns the best epoch's scores."""
        self._call("on_fit_start")
        while self.epoch < self.epochs and not self.stop:
            self._call("on_epoch_start")
            started = time.perf_counter()
            loss = self._train_epoch()
            seconds = time.perf_counter() - started
            valid = self.evaluate("valid")
            self._call("on_epoch_end", self._after_epoch(loss, valid, seconds))
        self._call("on_fit_end")
        if self.best["state"] is None:
            raise SlimctrError("training ended before any epoch finished")
        self.model.load_state_dict(self.best["state"])
        return {"best_epoch": self.best_epoch + 1, "history": self.history}

    def evaluate(self, split: str) -> dict[str, float]:
        return score(
            self.model,
            self.store,
            split,
            batch_size=self.config.eval_batch_size,
            bf16=self.bf16,
            world=self.world,
        )

    def step(self, batch: Batch) -> float:
        """One optimisation step on ``batch``; returns its log loss. ``fit`` calls it for every
        batch; benchmarks time it alone.

        The embedding L2 is added to the gradients after the callbacks (data parallelism sums
        the ranks' gradients there), so that it counts once, on the rows the global batch
        touched; clipping sees it, as it would see a penalty in the loss.
        """
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(batch)
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), batch.labels)
        loss.backward()
        self._call("on_before_optimizer_step", batch)
        if self.config.embedding_l2:
            _add_l2(self.embedding_tables, self.config.embedding_l2)
        if self.config.grad_clip_norm is not None:
            clip_grad_norm(self.model.parameters(), self.config.grad_clip_norm)
        for optimizer in self.optimizers:
            optimizer.step()
        return float(loss.detach())

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the last finished epoch ended."""
        return {
            "model": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "best": self.best,
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
        torch.set_rng_state(state["rng"])
        self.epoch, self.best, self.history = state["epoch"], state["best"], state["history"]

    # -- internals ---------------------------------------------------------------------------

    def _train_epoch(self) -> float:
        self.model.train()
        self.loader.set_epoch(self.epoch)
        total, count = 0.0, 0.0
        for batch in self.loader:
            loss = self.step(batch)
            total, count = total + loss * len(batch), count + len(batch)
            self._call("on_step_end", batch, loss)
        total, count = self.world.sum(total, count)  # the mean over every rank's rows
        return total / max(count, 1.0)

    def _after_epoch(self, loss: float, valid: dict[str, float], seconds: float) -> dict[str, Any]:
        improved = valid["auc"] > self.best["auc"]
        if improved:
            state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.best = {"epoch": self.epoch, "auc": valid["auc"], "state": state}
        record = {
            "epoch": self.epoch + 1,
            "train_loss": loss,
            "valid": valid,
            "lr": self.optimizers[0].param_groups[0]["lr"],
            "seconds": seconds,
            "train_samples_per_s": len(self.store.split("train")) / seconds,
            "best": improved,
        }
        self.history.append(record)
        for scheduler in self.schedulers:
            scheduler.step(valid["auc"])
        self.epoch += 1
        return record

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)


def score(
    model: nn.Module,
    store: Store,
    split: str,
    *,
    batch_size: int = 16384,
    bf16: bool = False,
    world: World = ALONE,
) -> dict[str, float]:
    """AUC and logloss of ``model`` on one split of ``store`` (NaN for an empty split).

    With several processes, each scores its share of every batch and the scores are gathered
    back into row order, so the metrics are over all rows, the same on every rank.
    """
    rows = store.split(split)
    if len(rows) == 0:
        return {"auc": math.nan, "logloss": math.nan}
    shard = (world.rank, world.size)
    batches = BatchLoader(store, split, batch_size=batch_size, shard=shard)
    logits = world.gather(predict_logits(model, batches, bf16=bf16))
    if world.size > 1:  # gathered part by part: put every score back at its row
        order = np.concatenate([batches.rows_of(part) for part in range(world.size)])
        logits = logits[np.argsort(order, kind="stable")]
    return auc_logloss(
        store.labels()[rows.start : rows.stop], logits, f"the {split} split of {store.path}"
    )


@torch.no_grad()
def predict_logits(
    model: nn.Module, batches: Iterable[Batch], rows: int | None = None, *, bf16: bool = False
) -> np.ndarray:
    """``model``'s logits (float64) for every row of ``batches``, in order, in eval mode.

    With ``rows`` known, scores go straight into one array: keeping every batch's output tensor
    alive fragments the heap between the large per-batch temporaries and multiplies peak memory.
    """
    model.eval()
    parts: list[np.ndarray] = []
    scores = np.empty(rows or 0, dtype=np.float64)
    done = 0
    for batch in batches:
        if len(batch) == 0:  # a data-parallel share of a batch smaller than the world
            continue
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch).float().numpy()
        if rows is None:
            parts.append(logits.astype(np.float64))
        else:
            scores[done : done + len(batch)] = logits
        done += len(batch)
    return np.concatenate(parts) if rows is None and parts else scores[:done]


def auc_logloss(labels: np.ndarray, logits: np.ndarray, what: str) -> dict[str, float]:
    """AUC and logloss of ``logits`` against 0/1 ``labels``; ``what`` names the rows in errors."""
    try:
        return {"auc": auc(labels, logits), "logloss": logloss_from_logits(labels, logits)}
    except ValueError as exc:  # e.g. one class only, or NaN scores
        raise SlimctrError(f"cannot score {what}: {exc}") from None


def _split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Embedding tables (updated with their own learning rate, maybe sparsely) and the rest."""
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    embedding = [p for p in model.parameters() if id(p) in tables]
    dense = [p for p in model.parameters() if id(p) not in tables]
    return embedding, dense


def _optimizers(
    embedding: list[nn.Parameter], dense: list[nn.Parameter], config: TrainConfig
) -> list[torch.optim.Optimizer]:
    """The first optimiser drives the plateau schedule; embedding optimisers follow its LR."""
    lr = config.embedding_lr or config.lr
    optimizers: list[torch.optim.Optimizer] = []
    if dense:
        optimizers.append(torch.optim.Adam(dense, lr=config.lr, weight_decay=config.weight_decay))
    if embedding:
        lazy = config.embedding_optimizer == "lazy_adam"
        kind = torch.optim.SparseAdam if lazy else torch.optim.Adam
        optimizers.append(kind(embedding, lr=lr))
    return optimizers


@torch.no_grad()
def _add_l2(tables: Sequence[nn.Parameter], strength: float) -> None:
    """Adds ``strength * e`` to the gradient of every row e of ``tables`` that has one: every row
    of a dense gradient, the touched rows (each once) of a sparse one."""
    for table in tables:
        if table.grad is None:
            continue
        if not table.grad.is_sparse:
            table.grad.add_(table, alpha=strength)
            continue
        grad = table.grad.coalesce()  # one entry per touched row
        rows = grad.indices()[0]
        values = grad.values() + strength * table[rows]
        table.grad = torch.sparse_coo_tensor(
            grad.indices(), values, grad.shape, is_coalesced=True, check_invariants=False
        )


@torch.no_grad()
def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> float:
    """Scales every gradient so that their global 2-norm is at most ``max_norm``; returns the
    norm before. Like ``torch.nn.utils.clip_grad_norm_``, which cannot read sparse gradients: a
    sparse one counts each row once (its duplicate entries summed)."""
    grads = []
    for parameter in parameters:
        if parameter.grad is not None and parameter.grad.is_sparse:
            parameter.grad = parameter.grad.coalesce()
            grads.append(parameter.grad.values())
        elif parameter.grad is not None:
            grads.append(parameter.grad)
    if not grads:
        return 0.0
    norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
    scale = max_norm / (norm + 1e-6)
    if scale < 1:
        for grad in grads:
            grad.mul_(scale)
    return norm
