"""The model bundle: everything needed to score new raw rows, and nothing else.

Layout of a bundle folder (a finished run's ``bundle/``, or wherever ``slimctr export`` copied it)::

    manifest.json        format and version, what the bundle holds, the sha256 of every file
    config.yaml          the resolved run configuration (``config_version`` in the manifest)
    schema.json          the fields the model was built for
    encoding.json        how raw rows become model inputs: the label, how the training files were
                         read, each field's transform and numeric statistics
    vocabulary.parquet   the kept values of every categorical field with their ids
    weights.safetensors  the model's weights (safetensors: loading runs no code, unlike pickle)
    versions.json        the versions and git revision that trained it
    scores.json          its validation and test scores at the best epoch, and its sizes

Every file is checked against the manifest when the bundle is opened. The manifest's ``models``
list and each model's ``storage`` leave room for what later work stores here (tables sliced to
kept rows with their id maps, sparse or quantised tables with their decoding metadata, several
group models with a router); a reader refuses any kind it does not know, naming it, rather than
load something it would misread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from slimctr import __version__
from slimctr.compress.dense import Int8Linear, int8_dense
from slimctr.compress.table import CompressedTable
from slimctr.config import dump_yaml, parse_yaml, to_dict
from slimctr.data.batch import Batch
from slimctr.data.encoder import Encoder, encoding_of
from slimctr.data.store import VOCABULARY, Store
from slimctr.errors import SlimctrError
from slimctr.files import (
    atomic_path,
    json_bytes,
    read_manifest,
    sha256_bytes,
    verified,
    write_manifested,
)
from slimctr.nn.masked import masked_embeddings, pack_state, unpack_state
from slimctr.nn.pruned import pack_maps, unpack_maps
from slimctr.runconfig import CONFIG_VERSION, RunConfig, build_model, read_config
from slimctr.schema import Schema
from slimctr.training.trainer import auc_logloss, predict_logits, resolve_precision

BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"
CONFIG = "config.yaml"
SCHEMA = "schema.json"
ENCODING = "encoding.json"
WEIGHTS = "weights.safetensors"
VERSIONS = "versions.json"
SCORES = "scores.json"
# How a model's weights are stored: as they live in memory (``compressed``: with tables kept
# by a codec, ``slimctr.compress``; ``compressed-int8``: and int8 dense layers,
# ``slimctr.compress.dense``), or with masked tables packed (``slimctr.nn.masked``: kept values
# and a bit per entry).
_STORAGES = ("dense", "masked", "compressed", "compressed-int8")


def is_bundle(path: Path) -> bool:
    """Whether ``path`` looks like a bundle folder: a manifest beside the weights (a data store
    has a manifest too, a run keeps its bundle one folder down)."""
    return (path / MANIFEST).is_file() and (path / WEIGHTS).is_file()


def write_bundle(
    folder: Path,
    *,
    config: RunConfig,
    model: nn.Module,
    store: Store,
    metrics: dict[str, Any],
    versions: dict[str, str],
    schema: Schema | None = None,
) -> None:
    """Write the bundle of ``model`` (trained with ``config`` on ``store``) into ``folder``;
    ``schema``: what the model was built for, when not the store's (pruned fields)."""
    storage = _storage(model)
    files = {
        CONFIG: dump_yaml(to_dict(config)).encode(),
        SCHEMA: json_bytes((schema or store.schema).to_dict()),
        ENCODING: json_bytes(encoding_of(store)),
        VOCABULARY: (store.path / VOCABULARY).read_bytes(),
        WEIGHTS: save_safetensors(stored_state(model)),
        VERSIONS: json_bytes(versions),
        SCORES: json_bytes(metrics),
    }
    header = {
        "format": "slimctr-bundle",
        "format_version": BUNDLE_FORMAT,
        "config_version": CONFIG_VERSION,
        "slimctr_version": __version__,
        "model_name": config.model_name,
        "models": [{"config": CONFIG, "weights": WEIGHTS, "storage": storage}],
        "router": None,
    }
    write_manifested(folder, files, MANIFEST, header)


def stored_state(model: nn.Module) -> dict[str, Tensor]:
    """The tensors the weights file of ``model``'s bundle holds: its state, with masked tables
    and pruned fields' maps packed to bits."""
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    if masked_embeddings(model):
        state = pack_state(model, state)
    return pack_maps(model, state)


def _storage(model: nn.Module) -> str:
    """How ``model``'s weights are stored (``_STORAGES``)."""
    if masked_embeddings(model):
        return "masked"
    if any(isinstance(m, Int8Linear) for m in model.modules()):
        return "compressed-int8"
    if any(isinstance(m, CompressedTable) for m in model.modules()):
        return "compressed"
    return "dense"


@dataclass(frozen=True)
class Predictions:
    """What ``Bundle.predict_file`` wrote: the row count and the input columns it ignored."""

    rows: int
    ignored: list[str]


class Bundle:
    """A loaded bundle: ``config``, ``schema``, the model (``module``, in eval mode) and the
    encoder of raw rows; ``checksum`` identifies the bundle (the sha256 of its manifest).

    ``share_weights``: the model's tensors are the weights file itself, memory-mapped (after
    the checksum check) rather than copied, so processes serving one bundle share its pages.
    A masked table is unpacked into memory either way."""

    def __init__(self, path: str | Path, *, share_weights: bool = False) -> None:
        self.path = Path(path)
        self.share_weights = share_weights
        if not self.path.is_dir():
            what = "a file, not a bundle folder" if self.path.exists() else "not there"
            raise SlimctrError(f"no such run or bundle folder: {self.path} is {what}")
        if not (self.path / MANIFEST).is_file():
            raise SlimctrError(
                f"{self.path} is not a slimctr model bundle or finished run (no {MANIFEST})"
            )
        self.manifest = read_manifest(self.path / MANIFEST, "slimctr-bundle", BUNDLE_FORMAT)
        self.checksum = sha256_bytes((self.path / MANIFEST).read_bytes())
        _check_contents(self.path, self.manifest)
        files = {
            name: verified(self.path / name, sha, MANIFEST)
            for name, sha in self.manifest["files"].items()
        }
        raw = parse_yaml(files[CONFIG].decode("utf-8"), self.path / CONFIG)
        self.config = read_config(raw, self.manifest["config_version"], str(self.path / CONFIG))
        self.schema = Schema.from_dict(self._json(files, SCHEMA))
        self.metrics: dict[str, Any] = self._json(files, SCORES) if SCORES in files else {}
        self.versions: dict[str, str] = self._json(files, VERSIONS) if VERSIONS in files else {}
        self.encoder = Encoder(
            self._json(files, ENCODING), pl.read_parquet(pa.BufferReader(files[VOCABULARY]))
        )
        self.module = self._model(files[WEIGHTS])

    def predict(self, rows: Any) -> np.ndarray:
        """Click probabilities (float64) for ``rows``: a polars or pandas DataFrame or a mapping
        of column name to values, matched by name."""
        logits = predict_logits(self.module, self.encoder.frame_batches(rows), bf16=self.bf16)
        return _sigmoid(logits)

    def predict_file(
        self, source: Path, out: Path, *, columns: Sequence[str] | None = None
    ) -> Predictions:
        """Write one probability per row of ``source``, in its order, to ``out`` (.csv with one
        ``probability`` column, or .parquet), batch by batch, under a temporary name renamed at
        the end."""
        _check_output(out, source)
        raw = self.encoder.open(source, columns)
        schema = pa.schema([("probability", pa.float64())])
        rows = 0
        with atomic_path(out) as temporary:
            if out.suffix == ".csv":
                plain = pacsv.WriteOptions(quoting_style="none", quoting_header="none")
                writer: Any = pacsv.CSVWriter(str(temporary), schema, write_options=plain)
            else:
                writer = pq.ParquetWriter(str(temporary), schema)
            with writer:
                for batch in self.encoder.batches(raw):
                    probabilities = _sigmoid(predict_logits(self.module, [batch], bf16=self.bf16))
                    writer.write_batch(pa.record_batch([pa.array(probabilities)], schema=schema))
                    rows += len(batch)
        return Predictions(rows, self.encoder.unused(raw.columns))

    def evaluate_file(
        self, source: Path, *, columns: Sequence[str] | None = None
    ) -> dict[str, float]:
        """AUC and logloss on the labelled rows of ``source``."""
        raw = self.encoder.open(source, columns)
        labels: list[np.ndarray] = []

        def batches() -> Iterator[Batch]:  # streamed: only labels and scores are kept
            for batch in self.encoder.batches(raw, labels=True):
                labels.append(batch.labels.numpy())
                yield batch

        logits = predict_logits(self.module, batches(), bf16=self.bf16)
        return auc_logloss(np.concatenate(labels), logits, str(source))

    def check_store(self, store: Store) -> None:
        """Raise unless ``store`` is encoded as this model's training data was (same fields,
        vocabularies and numeric statistics), so its ids mean what the model learned."""
        same = (
            store.schema == self.schema.unpruned()
            and store.manifest["checksums"].get(VOCABULARY) == self.manifest["files"][VOCABULARY]
            and encoding_of(store)["fields"] == [*self.encoder.fields.values()]
        )
        if not same:
            raise SlimctrError(
                f"{store.path} is not encoded like the data {self.path} was trained on "
                "(its fields, vocabularies or numeric statistics differ)"
            )

    # -- internals -------------------------------------------------------------------------------

    @property
    def bf16(self) -> bool:
        """Whether the model scores in bf16 autocast, as it was trained."""
        return resolve_precision(self.config.train.precision) == "bf16"

    def _json(self, files: dict[str, bytes], name: str) -> Any:
        try:
            return json.loads(files[name])
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SlimctrError(f"{self.path / name} is not valid JSON") from None

    def _model(self, weights: bytes) -> nn.Module:
        masked = self.manifest["models"][0]["storage"] == "masked"
        mapped = self.share_weights and not masked
        try:
            state = load_file(self.path / WEIGHTS) if mapped else load_safetensors(weights)
        except SafetensorError as error:
            raise SlimctrError(f"{self.path / WEIGHTS} is not readable ({error})") from None
        with torch.random.fork_rng(devices=[]):  # loading must not move the caller's RNG
            model = build_model(self.config, self.schema)
        if self.manifest["models"][0]["storage"] == "compressed-int8":
            int8_dense(model, fill=False)
        try:
            if masked:
                state = unpack_state(model, state)
            state = unpack_maps(model, state)
            model.load_state_dict(state, assign=mapped)  # mapped: the file's pages, not a copy
        except (RuntimeError, SlimctrError):
            raise SlimctrError(
                f"{self.path / WEIGHTS} does not hold the weights of its {self.config.model_name} "
                "configuration"
            ) from None
        return model.eval()


def _check_contents(path: Path, manifest: dict[str, Any]) -> None:
    """Refuse what this version cannot read: several models, a router, another weight storage,
    a missing file, or a file name that leads out of the bundle."""
    models = manifest.get("models")
    if manifest.get("router") is not None or not (
        isinstance(models, list) and len(models) == 1 and models[0].get("storage") in _STORAGES
    ):
        raise SlimctrError(
            f"{path} holds models this slimctr cannot read (several models, a router, or "
            f"weights stored as something other than {' or '.join(map(repr, _STORAGES))})"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or any(Path(name).name != name for name in files):
        raise SlimctrError(f"{path / MANIFEST} names a file outside the bundle")
    for name in (CONFIG, SCHEMA, ENCODING, VOCABULARY, WEIGHTS):
        if name not in files:
            raise SlimctrError(f"{path} is not a complete bundle: {name} is missing")


def _check_output(out: Path, source: Path) -> None:
    if out.suffix not in (".csv", ".parquet"):
        raise SlimctrError(f"--out {out} must end in .csv or .parquet")
    if not out.parent.is_dir():
        raise SlimctrError(f"--out {out}: the folder {out.parent} does not exist")
    if out.exists() and (out.is_dir() or (source.exists() and out.samefile(source))):
        what = "a folder" if out.is_dir() else "the input file"
        raise SlimctrError(f"--out {out} is {what}; give a new file name")


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return torch.sigmoid(torch.from_numpy(logits)).numpy()
