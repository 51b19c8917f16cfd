"""Data parallelism across processes and machines with ``torch.distributed`` (started by torchrun).

``torchrun --nproc-per-node N -m slimctr train ...`` starts N processes (ranks); each builds the
same model from the same seed and trains on its share of every batch. How the work is split:

- ``train.batch_size`` is the global batch. Every rank draws the same shuffled order (from the
  seed and the epoch), cuts it into global batches and takes its share: ``np.array_split`` of the
  batch into N parts, part ``rank``. A global batch of fewer than N rows (the tail of an epoch)
  is skipped, so no rank ever steps on nothing.
- After the backward pass each rank's gradient (of its mean loss) is weighted by its share of the
  global batch and the weighted gradients are summed over ranks, so every rank applies exactly the
  single-process update of the global batch (up to the order of floating-point sums). Regularisers
  computed from the weights (embedding L2) are added after the sum, on the rows the global batch
  touched, so they count once. Gradient clipping and the optimiser step come after the sum.
- Buffers (BatchNorm's running statistics) are copied from rank 0 after every step, so all ranks
  hold the same model. BatchNorm normalises each rank's share of the batch, as torch's DDP does
  without SyncBatchNorm (which does not run on the CPU); dropout draws its masks per rank, from a
  generator seeded with the seed and the rank.
- Validation and test: each rank scores a contiguous slice of the split and the scores are
  gathered in order, so AUC and logloss are computed over all rows, on every rank, and early
  stopping and the learning-rate plateau decide alike everywhere.
- Rank 0 alone writes the run folder (checkpoints, metrics, the bundle). A checkpoint holds the
  global state, so a run resumes with any number of processes.

Sparse embedding gradients (``train.embedding_optimizer=lazy_adam``) are summed by gloo's sparse
all-reduce, which sends only the touched rows. Across machines, every rank must see the store
and the run folder at the same paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from slimctr.data.batch import Batch
from slimctr.training.callbacks import Callback

if TYPE_CHECKING:
    from slimctr.training.trainer import Trainer


@dataclass(frozen=True)
class World:
    """This process's place among the ranks: ``rank`` of ``size`` (0 of 1 when alone)."""

    rank: int = 0
    size: int = 1

    @classmethod
    def from_env(cls) -> World:
        """The world torchrun describes in the environment (``WORLD_SIZE``), joined on first use;
        one process alone otherwise."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        if not dist.is_initialized():
            # Imported after the group is joined (the first optimiser does), torch._dynamo keeps
            # the group alive past destroy_process_group: gloo's threads then outlive the
            # interpreter and abort the process at exit (torch 2.13). Imported first, it does not.
            import torch._dynamo  # noqa: F401

            dist.init_process_group("gloo")  # slimctr trains on the CPU, even where CUDA is
        return cls(dist.get_rank(), dist.get_world_size())

    def gather(self, values: np.ndarray) -> np.ndarray:
        """Every rank's 1-D float64 ``values``, concatenated in rank order, on every rank."""
        if self.size == 1:
            return values
        local = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.size)]
        dist.all_gather(sizes, torch.tensor([len(local)]))
        longest = int(max(sizes).item())
        padded = torch.zeros(longest, dtype=torch.float64)
        padded[: len(local)] = local
        parts = [torch.empty(longest, dtype=torch.float64) for _ in range(self.size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[: int(n.item())] for p, n in zip(parts, sizes, strict=True)]).numpy()

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each of ``values`` summed over the ranks."""
        if self.size == 1:
            return values
        total = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(total)
        return tuple(total.tolist())

    def leave(self) -> None:
        """Leave the process group once every rank is done (a process that exits while gloo's
        threads still run is aborted)."""
        if self.size > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object), on every rank."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


ALONE = World()


class DataParallel(Callback):
    """The trainer callback that keeps the ranks in step (see the module docstring)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def on_fit_start(self, trainer: Trainer) -> None:
        # dropout masks per rank; the weights come from rank 0
        torch.manual_seed(
            int(np.random.SeedSequence([trainer.seed, self.world.rank]).generate_state(1)[0])
        )
        for tensor in trainer.model.state_dict().values():
            dist.broadcast(tensor, src=0)

    def on_before_optimizer_step(self, trainer: Trainer, batch: Batch) -> None:
        total = torch.tensor([float(len(batch))], dtype=torch.float64)
        dist.all_reduce(total)
        share = len(batch) / float(total.item())
        parameters = [p for p in trainer.model.parameters() if p.grad is not None]
        for parameter in parameters:
            if parameter.grad is not None and parameter.grad.is_sparse:  # gloo sums sparse ones
                parameter.grad = parameter.grad * share
                dist.all_reduce(parameter.grad)
        grads = [p.grad for p in parameters if p.grad is not None and not p.grad.is_sparse]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads]) * share
        dist.all_reduce(flat)
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def on_step_end(self, trainer: Trainer, batch: Batch, loss: float) -> None:
        for buffer in trainer.model.buffers():
            dist.broadcast(buffer, src=0)
