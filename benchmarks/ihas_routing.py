"""Does an iHAS-style router leak the labels? Positives per routed group, train against valid.

The router of a retrained iHAS-style run (``slimctr.models.routed``) sends each sample to one
group model. Its controller was trained with the task loss on the training split, through its
own embeddings, so it can memorise labels of rare ids. If it has, the groups hold very different
shares of positives on the training split and similar ones on the validation split. Each group
model then learns a base rate that new samples do not share. This prints, for each split, every
group's share of the samples and its share of positives, and how far the router's gate logits
are from 0 (a gate opens at a logit > 0): their mean absolute value, their standard deviation
between samples, and how many gates open for some samples and not others.

    python benchmarks/ihas_routing.py RUN DATA
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from slimctr.data.loader import BatchLoader
from slimctr.data.store import open_store
from slimctr.errors import SlimctrError
from slimctr.models.routed import Routed
from slimctr.training import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a retrained iHAS-style run (a routed model)")
    parser.add_argument("data", type=Path, help="the store it was trained on")
    args = parser.parse_args()
    try:
        model = run.load_model(args.run).module.eval()
        store = open_store(args.data)
    except SlimctrError as error:
        raise SystemExit(f"ihas_routing: error: {error}") from None
    if not isinstance(model, Routed):
        raise SystemExit(f"ihas_routing: error: {args.run} is not a routed model")
    for split in ("train", "valid"):
        groups, labels, logits = [], [], []
        for batch in BatchLoader(store, split, batch_size=8192, shuffle=False, seed=0):
            with torch.no_grad():
                groups.append(model.router.route(batch).numpy())
                logits.append(model.router.logits(batch).flatten(1).numpy())
            labels.append(batch.labels.numpy())
        group, label = np.concatenate(groups), np.concatenate(labels)
        shares = ", ".join(
            f"group {g}: {np.mean(group == g):.1%} of the samples, "
            f"{label[group == g].mean():.1%} positives"
            for g in np.unique(group)
        )
        print(f"{split}: {shares}")
        logit = np.concatenate(logits)
        opened = logit > 0
        varying = int(np.sum(opened.any(axis=0) & ~opened.all(axis=0)))
        print(
            f"{split} gate logits: mean |logit| {np.abs(logit).mean():.2f}, standard deviation "
            f"between samples {logit.std(axis=0).mean():.2f}; {varying} of {logit.shape[1]} "
            f"gates open for some of the {len(logit):,} samples and not others"
        )


if __name__ == "__main__":
    main()
