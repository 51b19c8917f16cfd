"""ONNX export (issue 20): every registered model, searched models (pruned rows, masked
entries) and compressed tables export and ONNX Runtime agrees with PyTorch, float8 tables are
refused; `slimctr export --format onnx` checks a run on its test split and writes a sidecar that
encodes raw rows as the bundle does."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import polars as pl
import pytest
import torch

from slimctr.compress.dense import int8_dense
from slimctr.compress.model import compress
from slimctr.models import MODELS
from slimctr.onnx_export import TOLERANCE, Probabilities, _trace
from slimctr.training import run
from tests.models.make_golden import tiny_batch, tiny_schema


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_exports_and_onnx_runtime_agrees(name, tmp_path):
    got, expected = _onnx_and_torch(_tiny(name), tmp_path)
    assert got.shape == (8,) and np.abs(got - expected).max() <= TOLERANCE  # 8 rows, traced on 2


@pytest.mark.parametrize("name", ["gdcn_p", "dcnv2", "deepfm"])
def test_a_model_with_int8_dense_layers_exports_and_onnx_runtime_agrees(name, tmp_path):
    model = _tiny(name)
    assert int8_dense(model) > 0
    got, expected = _onnx_and_torch(model, tmp_path)
    assert np.abs(got - expected).max() <= TOLERANCE


@pytest.mark.parametrize("kind", ["pruned", "masked"])
@pytest.mark.parametrize("name", ["dcnv2", "deepfm"])
def test_a_searched_model_exports_and_onnx_runtime_agrees(name, kind, tmp_path):
    got, expected = _onnx_and_torch(_searched(name, kind), tmp_path)
    assert np.abs(got - expected).max() <= TOLERANCE


@pytest.mark.parametrize("codec", ["fp16", "bf16", "int8", "int8@row", "binary", "pca:0.5+int8"])
def test_a_compressed_bundle_exports_and_onnx_runtime_agrees(cli, trained, tmp_path, codec):
    compress(trained / "deepfm", codec, tmp_path / "bundle")
    result = cli("export", tmp_path / "bundle", "--format", "onnx", "--out", tmp_path / "onnx",
                 "--data", trained / "data", "--json")  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(result.out)["check"]["max_abs_difference"] <= TOLERANCE


def test_float8_tables_are_refused_before_anything_is_written(cli, trained, tmp_path):
    compress(trained / "deepfm", "pca:0.5+fp8-e4m3", tmp_path / "bundle")
    result = cli("export", tmp_path / "bundle", "--format", "onnx", "--out", tmp_path / "onnx")
    assert result.code != 0 and "compress with int8" in result.err
    assert len(result.err.strip().splitlines()) == 1 and not (tmp_path / "onnx").exists()


def _searched(name: str, kind: str) -> torch.nn.Module:
    """Model ``name`` as a search leaves it: field c1 keeping 3 of its 7 rows (``pruned``:
    OptEmbed, OptFS), or every table keeping about half its entries (``masked``: PEP, DNIS)."""
    generator = torch.Generator().manual_seed(0)
    schema = tiny_schema()
    masks = {f.name: torch.rand(f.vocab_size, 16, generator=generator) < 0.5
             for f in schema.categorical}  # fmt: skip
    if kind == "pruned":
        schema = schema.with_kept_rows({"c1": 3})
    else:
        schema = schema.with_kept_entries({n: int(m.sum()) for n, m in masks.items()})
    torch.manual_seed(0)
    entry = MODELS[name]
    model = entry.model(schema, entry.config(embedding_dim=16)).eval()
    if kind == "pruned":
        model.embedding.set_kept("c1", [1, 4, 6])
    else:
        for field_name, mask in masks.items():
            model.embedding.set_mask(field_name, mask)
    return model


def _tiny(name: str) -> torch.nn.Module:
    """Model ``name`` with its default config on the tiny schema, seeded, in eval mode."""
    torch.manual_seed(0)
    entry = MODELS[name]
    return entry.model(tiny_schema(), entry.config()).eval()


def _onnx_and_torch(model: torch.nn.Module, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """The probabilities of ``model`` on the tiny batch from ONNX Runtime (traced on 2 rows)
    and from PyTorch."""
    wrapped = Probabilities(model).eval()
    batch = tiny_batch()
    _trace(wrapped, (batch.categorical[:2], batch.numeric[:2]), tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    feeds = {"categorical": batch.categorical.numpy(), "numeric": batch.numeric.numpy()}
    got = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0]
    with torch.no_grad():
        expected = wrapped(batch.categorical, batch.numeric).numpy()
    return got, expected


def test_export_onnx_checks_the_run_and_its_sidecar_encodes_as_the_bundle(cli, trained, tmp_path):
    out = tmp_path / "onnx"
    result = cli("export", trained / "deepfm", "--format", "onnx", "--out", out, "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["check"]["rows"] == 300 and summary["check"]["max_abs_difference"] <= 1e-5
    sidecar = json.loads((out / "sidecar.json").read_text())
    bundle = run.load_model(trained / "deepfm")
    assert sidecar["inputs"]["categorical"]["fields"] == [f.name for f in bundle.schema.categorical]
    assert sidecar["bundle"]["checksum"] == bundle.checksum
    raw = pl.read_csv(trained / "raw.csv").head(50)
    expected = next(bundle.encoder.frame_batches(raw)).categorical.numpy()
    vocabularies, fields = sidecar["vocabularies"], sidecar["inputs"]["categorical"]["fields"]
    oov = sidecar["oov_id"]
    ids = np.array(
        [[vocabularies[f].get(str(v), oov) for f, v in zip(fields, row, strict=True)]
         for row in raw.select(fields).rows()]
    )  # fmt: skip
    assert np.array_equal(ids, expected)
    again = cli("export", trained / "deepfm", "--format", "onnx", "--out", out)
    assert again.code != 0 and "not empty" in again.err


def test_an_unknown_export_format_is_a_one_line_error(cli, trained, tmp_path):
    result = cli("export", trained / "deepfm", "--format", "tflite", "--out", tmp_path / "x")
    assert result.code != 0 and "unknown export format 'tflite'" in result.err
