"""DCNv2: both structures, low rank, per-field widths, and the parameter count formula."""

from __future__ import annotations

import pytest
import torch

from slimctr.models.dcnv2 import DCNv2, DCNv2Config
from tests.models.formulas import count_params, mlp_params
from tests.models.make_golden import VOCAB_SIZES, tiny_batch, tiny_schema

NUM_NUMERIC = 2


@pytest.mark.parametrize("structure", ["parallel", "stacked"])
@pytest.mark.parametrize("low_rank", [None, 4])
def test_parameter_count_matches_the_formula(structure: str, low_rank: int | None) -> None:
    d, layers, hidden = 16, 3, (400, 400, 400)
    config = DCNv2Config(structure=structure, low_rank=low_rank)  # type: ignore[arg-type]
    model = DCNv2(tiny_schema(), config)
    width = d * (len(VOCAB_SIZES) + NUM_NUMERIC)  # D = 80
    embeddings = d * sum(VOCAB_SIZES) + d * NUM_NUMERIC
    per_layer = width * width + width if low_rank is None else 2 * width * low_rank + width
    output = (width + hidden[-1] + 1) if structure == "parallel" else hidden[-1] + 1
    expected = embeddings + layers * per_layer + mlp_params(width, hidden) + output
    assert count_params(model) == expected
    assert model(tiny_batch()).shape == (8,)


def test_paper_sized_counts() -> None:
    """The helper agrees with the DNN count of GDCN spec 2.7 at D = 624."""
    assert mlp_params(624, (400, 400, 400)) == (624 * 400 + 400) + 800 + 2 * (400 * 400 + 1200)


def test_cross_network_alone_without_mlp() -> None:
    model = DCNv2(tiny_schema(), DCNv2Config(hidden_dims=(), num_cross_layers=2))
    width = 80
    embeddings = 16 * (sum(VOCAB_SIZES) + NUM_NUMERIC)
    assert count_params(model) == embeddings + 2 * (width * width + width) + width + 1
    assert model(tiny_batch()).shape == (8,)


def test_structures_compute_what_they_say() -> None:
    batch = tiny_batch()
    for structure in ("parallel", "stacked"):
        torch.manual_seed(0)
        model = DCNv2(tiny_schema(), DCNv2Config(structure=structure)).eval()  # type: ignore[arg-type]
        x0 = model.embedding.flat(batch)
        cross = model.cross(x0)
        if structure == "parallel":
            hidden = torch.cat([cross, model.mlp(x0)], dim=1)
        else:
            hidden = model.mlp(cross)
        torch.testing.assert_close(model(batch), model.output(hidden).squeeze(1))


def test_per_field_widths() -> None:
    widths = {"c0": 2, "n0": 1, "c1": 4, "c2": 3, "n1": 5}
    model = DCNv2(tiny_schema(), DCNv2Config(embedding_dim=widths, hidden_dims=(8,)))
    assert model.embedding.output_dim == 15
    assert model.cross.layers[0].project.weight.shape == (15, 15)
    assert model(tiny_batch()).shape == (8,)
