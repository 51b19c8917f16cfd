"""The tiny schema and batch of the model tests, and the stored golden logits.

Regenerate ``golden.json`` after an intended change to a model's initialisation or forward pass
(or after registering a new model), then review the diff:

    .venv/bin/python tests/models/make_golden.py

Per model it stores the logits of the default config, built after ``torch.manual_seed(0)`` and
run in eval mode ("init"), and the logits after every parameter has been shifted by seeded
N(0, 0.05^2) noise ("perturbed"), which makes small embeddings matter in the output.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from slimctr.data.batch import Batch
from slimctr.models import MODELS
from slimctr.schema import FieldSpec, Schema

GOLDEN_PATH = Path(__file__).with_name("golden.json")
VOCAB_SIZES = (5, 7, 11)
BATCH_SIZE = 8


def tiny_schema() -> Schema:
    """3 categorical fields (vocab sizes 5, 7, 11) and 2 numeric fields, interleaved."""
    c0, c1, c2 = (
        FieldSpec(name=f"c{i}", kind="categorical", vocab_size=n) for i, n in enumerate(VOCAB_SIZES)
    )
    n0, n1 = FieldSpec(name="n0", kind="numeric"), FieldSpec(name="n1", kind="numeric")
    return Schema(label="y", fields=(c0, n0, c1, c2, n1))


def tiny_batch() -> Batch:
    """8 rows of fixed ids (every id of every field but the largest appears) and values."""
    rows = torch.arange(BATCH_SIZE).unsqueeze(1)
    steps = torch.tensor([1, 3, 5])
    vocab = torch.tensor(VOCAB_SIZES)
    categorical = ((rows * steps + 1) % vocab).to(torch.int32)  # (8, 3)
    numeric = torch.stack([rows[:, 0] * 0.5 - 1.75, torch.cos(rows[:, 0].float())], dim=1)
    labels = (rows[:, 0] % 3 == 0).float()
    return Batch(categorical=categorical, numeric=numeric.float(), labels=labels)


def build(name: str, seed: int = 0) -> nn.Module:
    entry = MODELS[name]
    torch.manual_seed(seed)
    return entry.model(tiny_schema(), entry.config())


@torch.no_grad()
def golden_logits(name: str) -> dict[str, list[float]]:
    model = build(name).eval()
    batch = tiny_batch()
    init = model(batch)
    noise = torch.Generator().manual_seed(1)
    for parameter in model.parameters():
        parameter.add_(0.05 * torch.randn(parameter.shape, generator=noise))
    perturbed = model(batch)
    return {"init": init.tolist(), "perturbed": perturbed.tolist()}


def main() -> None:
    golden = {name: golden_logits(name) for name in sorted(MODELS)}
    GOLDEN_PATH.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {GOLDEN_PATH} ({len(golden)} models)")


if __name__ == "__main__":
    main()
