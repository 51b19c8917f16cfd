"""FM second-order term and the first-order linear term."""

from __future__ import annotations

import itertools

import torch

from slimctr.data.batch import Batch
from slimctr.nn.fm import LinearTerm, fm_second_order
from slimctr.schema import FieldSpec, Schema


def test_second_order_by_hand() -> None:
    e = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # one sample, two fields
    # <e1, e2> = 3 + 8 = 11
    torch.testing.assert_close(fm_second_order(e), torch.tensor([11.0]))


def test_second_order_equals_pairwise_sum() -> None:
    torch.manual_seed(0)
    e = torch.randn(4, 5, 3, dtype=torch.float64)
    pairs = sum((e[:, i] * e[:, j]).sum(dim=1) for i, j in itertools.combinations(range(5), 2))
    torch.testing.assert_close(fm_second_order(e), pairs)


def test_linear_term_by_hand() -> None:
    schema = Schema(
        label="y",
        fields=(
            FieldSpec(name="a", kind="categorical", vocab_size=4),
            FieldSpec(name="z", kind="numeric"),
        ),
    )
    term = LinearTerm(schema)
    with torch.no_grad():
        term.weights.table("a").copy_(torch.tensor([[0.0], [1.0], [2.0], [3.0]]))
        term.weights.table("z").fill_(-0.5)
        term.bias.fill_(0.25)
    batch = Batch(
        categorical=torch.tensor([[3], [1]], dtype=torch.int32),
        numeric=torch.tensor([[2.0], [-4.0]]),
        labels=torch.zeros(2),
    )
    # 0.25 + w_a[3] + (-0.5) * 2 = 2.25;  0.25 + w_a[1] + (-0.5) * (-4) = 3.25
    torch.testing.assert_close(term(batch), torch.tensor([2.25, 3.25]))
