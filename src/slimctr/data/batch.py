"""The one object passed between loader, model and trainer."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Batch:
    """A mini-batch of B rows.

    ``categorical`` holds one id per categorical field, in ``Schema.categorical`` order, ``numeric``
    one standardised value per numeric field, in ``Schema.numeric`` order (width 0 when there are
    none), and ``labels`` the 0/1 targets.
    """

    categorical: torch.Tensor  # (B, F_cat) int32
    numeric: torch.Tensor  # (B, F_num) float32
    labels: torch.Tensor  # (B,) float32

    def __len__(self) -> int:
        return self.labels.shape[0]

    def rows(self, index: slice | torch.Tensor) -> Batch:
        """The rows ``index`` selects (a slice, or row numbers in any order, repeats allowed)."""
        return Batch(self.categorical[index], self.numeric[index], self.labels[index])

    @staticmethod
    def concat(batches: list[Batch]) -> Batch:
        """The rows of ``batches``, one after the other."""
        return Batch(
            categorical=torch.cat([b.categorical for b in batches]),
            numeric=torch.cat([b.numeric for b in batches]),
            labels=torch.cat([b.labels for b in batches]),
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            categorical=self.categorical.to(device, non_blocking=non_blocking),
            numeric=self.numeric.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
        )
