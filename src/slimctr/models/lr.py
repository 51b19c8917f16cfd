"""LR: logistic regression on one-hot categorical ids and raw numeric values.

logit = w_0 + sum_{f categorical} w_f[x_f] + sum_{f numeric} w_f * x_f
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from slimctr.data.batch import Batch
from slimctr.models.checks import check_init_std
from slimctr.models.registry import register
from slimctr.nn.fm import LinearTerm
from slimctr.schema import Schema


@dataclass(frozen=True, kw_only=True)
class LRConfig:
    embedding_init_std: float | None = 1e-4  # weights ~ N(0, std^2); None: xavier-uniform

    def __post_init__(self) -> None:
        check_init_std("embedding_init_std", self.embedding_init_std)


@register(
    "lr", LRConfig, "logistic regression: a bias plus one weight per id and per numeric field"
)
class LR(nn.Module):
    def __init__(self, schema: Schema, config: LRConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = LinearTerm(schema, init_std=config.embedding_init_std)

    def forward(self, batch: Batch) -> Tensor:
        return self.linear(batch)  # (B,)
