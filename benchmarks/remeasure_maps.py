"""Re-measure the logged sizes of the study runs whose models prune rows, with today's storage.

Since 2026-12-05 a bundle stores a pruned field's id-to-row map as a bit per id, not an int32
(``slimctr.nn.pruned``). The search and compression logs hold sizes measured before; this loads
each logged model with pruned fields from its run or bundle folder and writes what the current
code measures: embedding bytes (``run.model_size``) and the weights file as ``write_bundle``
writes it now. Records whose sizes already agree are left as they are, so it can run again (a
study process started before the change logs the old sizes).

    python benchmarks/remeasure_maps.py [--work runs/bench-search]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from safetensors.torch import save as save_safetensors

from slimctr.bundle import stored_state
from slimctr.nn.pruned import pruned_embeddings
from slimctr.training import run

ROOT = Path(__file__).resolve().parents[1]
SEARCH_LOG = ROOT / "benchmarks" / "results" / "search_runs.jsonl"
COMPRESSION_LOG = ROOT / "benchmarks" / "results" / "compression_runs.jsonl"


def measured(folder: Path) -> dict[str, int] | None:
    """The embedding bytes of the model in ``folder`` (a run or a bundle) and the bytes of the
    weights file a bundle of it has now; None when it prunes no rows."""
    module = run.load_model(folder).module
    if not pruned_embeddings(module):
        return None
    return {
        "embedding_bytes": run.model_size(module)["embedding_bytes"],
        "weight_bytes": len(save_safetensors(stored_state(module))),
    }


def search_changes(work: Path) -> dict[str, dict[str, Any]]:
    changes = {}
    for record in _read(SEARCH_LOG):
        folder = work / record["dataset"] / f"{record['model']}-{record['seed']}"
        path = folder / record["cell"].replace(":", "-") / "run"
        if record["cell"] == "full" or not path.is_dir() or (sizes := measured(path)) is None:
            continue
        new = {"embedding_bytes": sizes["embedding_bytes"]}
        if "bundle_weight_bytes" in record:  # older records did not measure it
            new["bundle_weight_bytes"] = sizes["weight_bytes"]
        if any(record.get(k) != v for k, v in new.items()):
            changes[record["key"]] = new
    return changes


def compression_changes(work: Path) -> dict[str, dict[str, Any]]:
    changes = {}
    for record in _read(COMPRESSION_LOG):
        name = record["codec"].replace(":", "-")
        source = f"{record['model']}-{record['seed']}"
        path = work / "compressed" / record["dataset"] / source / name
        if not path.is_dir() or (sizes := measured(path)) is None:
            continue
        new = {
            "embedding_bytes": sizes["embedding_bytes"],
            "weight_bytes": sizes["weight_bytes"],
            "bundle_bytes": record["bundle_bytes"] - record["weight_bytes"] + sizes["weight_bytes"],
        }
        if any(record.get(k) != v for k, v in new.items()):
            changes[record["key"]] = new
    return changes


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _apply(path: Path, changes: dict[str, dict[str, Any]]) -> None:
    """Rewrite ``path`` with ``changes`` applied by key, reading it afresh (a study process may
    have appended since), through a temporary file."""
    records = [r | changes.get(r["key"], {}) for r in _read(path)]
    staged = path.with_suffix(".jsonl.tmp")
    staged.write_text("".join(json.dumps(r) + "\n" for r in records))
    staged.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-search")
    args = parser.parse_args()
    for path, changes in ((SEARCH_LOG, search_changes(args.work)),
                          (COMPRESSION_LOG, compression_changes(args.work))):  # fmt: skip
        for key, new in changes.items():
            print(f"{key}: {new}")
        _apply(path, changes)
        print(f"{path.name}: {len(changes)} records re-measured")


if __name__ == "__main__":
    main()
