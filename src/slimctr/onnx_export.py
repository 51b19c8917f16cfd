"""ONNX export of a model bundle: ``slimctr export RUN_OR_BUNDLE --format onnx --out DIR``.

DIR gets ``model.onnx``, the model as a graph from the encoded inputs to click probabilities,
and ``sidecar.json``, what a caller needs to encode raw rows without slimctr: the input order
(``categorical`` ids (rows, F_cat) int32 and ``numeric`` values (rows, F_num) float32, the
fields in schema order), each categorical field's vocabulary (value to id; an unseen value is
the OOV id 1, a missing one its own value as ``prepare`` saw it), each numeric field's
transform and statistics, and the bundle it came from (its checksum).

The graph is traced with torch's ONNX exporter (``dynamo=True``, which needs ``onnxscript``)
in float32: a model trained with bf16 autocast exports its float32 weights without the
autocast. When the data are at hand (a run's own store, or ``data_dir``), the export checks
that ONNX Runtime's probabilities equal PyTorch's float32 ones within ``TOLERANCE`` on the
test split, and refuses to finish otherwise. Compressed tables in float8 are refused before
tracing: ONNX Runtime's CPU kernels gather no float8 tensors, so it could not load the graph.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from slimctr.bundle import Bundle
from slimctr.data.batch import Batch
from slimctr.data.loader import BatchLoader
from slimctr.data.store import Store, open_store
from slimctr.errors import SlimctrError
from slimctr.files import exclusive, json_bytes, remove_leftovers, staged

MODEL = "model.onnx"
SIDECAR = "sidecar.json"
TOLERANCE = 1e-5


class Probabilities(nn.Module):
    """A model as a function of tensors: (categorical ids, numeric values) -> probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, categorical: Tensor, numeric: Tensor) -> Tensor:
        labels = torch.zeros(categorical.shape[0])
        batch = Batch(categorical=categorical, numeric=numeric, labels=labels)
        return torch.sigmoid(self.model(batch))


def sidecar(bundle: Bundle) -> dict[str, Any]:
    """What a caller needs to encode raw rows for ``model.onnx``."""
    schema = bundle.schema
    encoder = bundle.encoder
    vocabularies = {
        name: dict(zip(frame["value"].to_list(), frame["id"].to_list(), strict=True))
        for name, frame in encoder.vocabularies.items()
    }
    return {
        "format": "slimctr-onnx-sidecar",
        "model": MODEL,
        "inputs": {
            "categorical": {"dtype": "int32", "fields": [f.name for f in schema.categorical]},
            "numeric": {"dtype": "float32", "fields": [f.name for f in schema.numeric]},
        },
        "output": {"name": "probability", "dtype": "float32"},
        "oov_id": 1,
        "fields": list(encoder.fields.values()),
        "reading": encoder.reading,
        "vocabularies": vocabularies,
        "bundle": {"path": str(bundle.path), "checksum": bundle.checksum},
    }


def export_onnx(bundle: Bundle, out: Path, store: Store | None = None) -> dict[str, Any]:
    """Write ``model.onnx`` and ``sidecar.json`` of ``bundle`` into the new folder ``out``;
    with ``store`` (encoded as the bundle's data), check ONNX Runtime against PyTorch on its test
    split first. Returns what was written and the check's result."""
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if not find_spec(name)]
    if missing:
        raise SlimctrError(f"ONNX export needs {', '.join(missing)}: pip install 'slimctr[serve]'")
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SlimctrError(f"--out {out} already exists and is not empty; give a new folder")
    if store is not None:
        bundle.check_store(store)
    schema = bundle.schema
    float8 = [f for f in schema.categorical if f.codec is not None and "fp8" in f.codec]
    if float8:
        raise SlimctrError(
            f"field {float8[0].name!r} is stored as {float8[0].codec}, and ONNX Runtime cannot "
            "gather float8 tables: compress with int8 for an ONNX model"
        )
    wrapped = Probabilities(bundle.module).eval()
    example = (
        torch.ones((2, len(schema.categorical)), dtype=torch.int32),  # the OOV id
        torch.zeros((2, len(schema.numeric)), dtype=torch.float32),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"out": str(out), "format": "onnx"}
    with exclusive(out, "the export"):
        remove_leftovers(out)
        with staged(out) as staging:
            graph = staging / MODEL
            _trace(wrapped, example, graph)
            if store is not None:
                result["check"] = check(wrapped, graph, store)
            (staging / SIDECAR).write_bytes(json_bytes(sidecar(bundle)))
    return result


def _trace(wrapped: nn.Module, example: tuple[Tensor, Tensor], path: Path) -> None:
    rows = torch.export.Dim("rows")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # its notes on missing torchvision
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapped,
                example,
                input_names=["categorical", "numeric"],
                output_names=["probability"],
                dynamic_shapes=({0: rows}, {0: rows}),
                dynamo=True,
                verbose=False,
            )
    except Exception as error:  # the exporter raises many kinds; each is one message here
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()  # without terminal colours
        first = text.splitlines()[0] if text else type(error).__name__
        raise SlimctrError(f"this model does not export to ONNX: {first}") from None
    assert program is not None
    program.save(str(path))


def check(wrapped: nn.Module, graph: Path, store: Store, batch_size: int = 4096) -> dict[str, Any]:
    """The largest difference between ONNX Runtime's and PyTorch's float32 probabilities on the
    test split of ``store``; an error beyond ``TOLERANCE``."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    except Exception as error:
        first = str(error).strip().splitlines()[0]
        raise SlimctrError(f"ONNX Runtime cannot load the exported model: {first}") from None
    largest, rows = 0.0, 0
    for batch in BatchLoader(store, "test", batch_size=batch_size):
        feeds = {"categorical": batch.categorical.numpy(), "numeric": batch.numeric.numpy()}
        feeds = {i.name: feeds[i.name] for i in session.get_inputs()}  # empty inputs may go
        runtime = session.run(None, feeds)[0]
        with torch.no_grad():
            reference = wrapped(batch.categorical, batch.numeric).numpy()
        largest = max(largest, float(np.abs(runtime - reference).max(initial=0.0)))
        rows += len(batch)
    if largest > TOLERANCE:
        raise SlimctrError(
            f"ONNX Runtime's probabilities differ from PyTorch's by up to {largest:.2e} on the "
            f"test split (tolerance {TOLERANCE:g}); nothing was written"
        )
    return {"rows": rows, "max_abs_difference": largest, "tolerance": TOLERANCE}


def store_for_check(path: Path, data_dir: Path | None) -> Store | None:
    """The store to check an export on: ``data_dir``, or a run's own store when it is here."""
    if data_dir is not None:
        return open_store(data_dir)
    record = Path(path) / "data.json"
    if record.is_file():
        located = Path(json.loads(record.read_text())["path"])
        return open_store(located) if located.is_dir() else None
    return None
