"""Compressed models: scored through the unchanged model on decoded tables (property 24), kept
compressed in memory, honest sizes, and bundles that round-trip in a new process."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from slimctr.compress.model import compress, compress_model
from slimctr.compress.table import CompressedTable
from slimctr.data.loader import BatchLoader
from slimctr.errors import SlimctrError
from slimctr.nn.embedding import FieldEmbedding
from slimctr.training import run


def _loaded(trained):
    config, model, store = run.load_run(trained / "deepfm")
    return config, model, store, run.load_model(trained / "deepfm").schema


@pytest.mark.parametrize("codec", ["int8", "fp8-e4m3@field", "pca:0.5+fp8-e5m2", "binary"])
def test_a_compressed_model_is_the_model_on_its_decoded_tables(trained, codec):
    config, model, store, schema = _loaded(trained)
    compressed, compressed_schema = compress_model(config, model, schema, codec)
    embedding = compressed.embedding
    decoded = {f.name: embedding.table(f.name) for f in schema.categorical}
    with torch.no_grad():  # the float32 model with the decoded tables put in
        for name, table in decoded.items():
            model.embedding.table(name).copy_(table)
    batch = next(iter(BatchLoader(store, "test", batch_size=500)))
    assert torch.allclose(compressed(batch), model.eval()(batch), atol=1e-5)
    assert all(f.codec == codec for f in compressed_schema.categorical)


def test_tables_stay_compressed_in_memory_and_sizes_are_what_is_stored(trained):
    config, model, _, schema = _loaded(trained)
    compressed, _ = compress_model(config, model, schema, "int8")
    tables = [t for t in compressed.modules() if isinstance(t, CompressedTable)]
    assert len(tables) == 4 and all(t.codes.dtype == torch.uint8 for t in tables)
    assert not any(isinstance(m, torch.nn.Embedding) for m in compressed.embedding.modules())
    size = run.model_size(compressed)
    numeric = 2 * 8
    assert size["embedding_bytes"] == sum(t.stored_bytes for t in tables) + 4 * numeric
    assert size["embedding_params"] == run.model_size(model)["embedding_params"]
    first_order = next(m for m in compressed.modules() if isinstance(m, FieldEmbedding))
    assert first_order.fused_table is not None  # the linear term stays float32


@pytest.mark.parametrize(("dense", "storage"), [(None, "compressed"), ("int8", "compressed-int8")])
def test_a_compressed_bundle_round_trips_in_a_new_process(trained, tmp_path, dense, storage):
    result = compress(trained / "deepfm", "fp8-e4m3", tmp_path / "bundle", dense=dense)
    assert (
        result["bundle_bytes"] > 0
        and result["embedding_bytes"] < result["float32"]["embedding_bytes"]
    )
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["models"][0]["storage"] == storage
    rows = tmp_path / "rows.csv"
    data = trained / "raw.csv"
    rows.write_text("".join(data.read_text().splitlines(keepends=True)[:200]))
    here = run.load_model(tmp_path / "bundle").predict(
        __import__("polars").read_csv(rows).to_dicts()
    )
    code = (
        "import sys, json, polars; from slimctr.training import run; "
        "b = run.load_model(sys.argv[1]); "
        "print(json.dumps(b.predict(polars.read_csv(sys.argv[2]).to_dicts()).tolist()))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "bundle"), str(rows)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert np.array_equal(np.array(json.loads(out.stdout)), here)
    evaluated = run.evaluate(tmp_path / "bundle", data_dir=trained / "data")
    assert evaluated["auc"] == pytest.approx(result["test"]["auc"])


def test_bad_codecs_and_fields_are_one_line_errors(trained, tmp_path):
    config, model, _, schema = _loaded(trained)
    with pytest.raises(SlimctrError, match="unknown codec 'int4'"):
        compress_model(config, model, schema, "int4")
    with pytest.raises(SlimctrError, match="no categorical field 'I1'"):
        compress_model(config, model, schema, {"I1": "int8"})
    compressed, per_field = compress_model(config, model, schema, {"C4": "int8"})
    assert [f.codec for f in per_field.categorical] == [None, None, None, "int8"]
    for name in ("C1", "C2", "C3"):  # the others keep their float32 tables, as trained
        assert torch.equal(compressed.embedding.table(name), model.embedding.table(name))


def test_a_searched_model_with_pruned_rows_and_its_own_widths_compresses_the_same_way(
    trained, tmp_path
):
    from slimctr.search import Plan, Start, train_plan
    from slimctr.search.plan import field_sizes

    start = Start.from_run(trained / "deepfm")
    sizes = field_sizes(start.store.schema)
    widths = {name: 8 for name in sizes} | {"C3": 4, "C4": 4}
    plan = Plan(method="test", widths=widths, field_sizes=sizes,
                kept={"C4": torch.arange(0, sizes["C4"], 2).numpy()})  # fmt: skip
    train_plan(plan, Start(start.config, start.store), tmp_path / "searched")
    result = compress(tmp_path / "searched", "int8", tmp_path / "bundle")
    searched = run.model_size(run.load_model(tmp_path / "searched").module)
    assert result["float32"]["embedding_bytes"] == searched["embedding_bytes"]
    model = run.load_model(tmp_path / "bundle").module
    maps = math.ceil(sizes["C4"] / 8) + 2 * 8 * 4  # the map (a bit per id), numeric vectors
    tables = sum(t.stored_bytes for t in model.modules() if isinstance(t, CompressedTable))
    assert result["embedding_bytes"] == tables + maps == run.model_size(model)["embedding_bytes"]
    assert result["embedding_bytes"] < searched["embedding_bytes"]
    assert model.embedding.field_dims == tuple(widths.values())
    assert run.evaluate(tmp_path / "bundle", data_dir=trained / "data")["auc"] == pytest.approx(
        result["test"]["auc"]
    )
