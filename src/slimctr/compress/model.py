"""Post-training compression of a trained model's embedding tables (dimension-search spec 7).

``compress_model(config, model, schema, codec)`` gives the same model with every categorical
table stored by ``codec`` (``codecs.parse``: one name for all fields, or a name per field) and
the schema that builds it (``FieldSpec.codec``); ``compress(run, codec, out)`` does it for a
finished run (a search's retrained run too: pruned rows and per-field widths compress the
same way), scores it on the run's validation and test splits, and writes a bundle that
``evaluate``, ``predict`` and ``load_model`` use like any other, with int8 dense layers too if
asked. The tables stay compressed in memory; a batch dequantises only the rows it gathers, so
nothing is simulated.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimctr.bundle import write_bundle
from slimctr.compress.codecs import parse
from slimctr.compress.dense import int8_dense
from slimctr.compress.table import CompressedTable
from slimctr.errors import SlimctrError
from slimctr.files import atomic_path, exclusive, remove_leftovers, staged, write_json
from slimctr.nn.embedding import FieldEmbedding, field_embeddings
from slimctr.runconfig import RunConfig, build_model
from slimctr.rundir import versions
from slimctr.schema import Schema
from slimctr.training import run
from slimctr.training.trainer import score

__all__ = ["compress", "compress_model"]


def compress_model(
    config: RunConfig, model: nn.Module, schema: Schema, codec: str | Mapping[str, str]
) -> tuple[nn.Module, Schema]:
    """``model`` (built from ``config`` and ``schema``) with its categorical tables stored by
    ``codec``, in eval mode, and the schema it is built from."""
    names = [f.name for f in schema.categorical]
    codecs = dict.fromkeys(names, codec) if isinstance(codec, str) else dict(codec)
    unknown = [name for name in codecs if name not in names]
    if unknown:
        raise SlimctrError(f"no categorical field {unknown[0]!r} to compress")
    for name in set(codecs.values()):
        parse(name)  # an unknown codec is an error before any work
    if any(f.kept_entries is not None for f in schema.fields):
        raise SlimctrError("a masked model (PEP, DNIS) is stored sparse already; not compressed")
    compressed_schema = schema.with_codecs(codecs)
    with torch.random.fork_rng(devices=[]):
        compressed = build_model(config, compressed_schema)
    dense = dict(model.named_modules())
    names = [f.name for f in compressed_schema.categorical]
    # Per-field tables (compressed or not) are filled from the source's tables below; every
    # other tensor is copied and must have its counterpart.
    tables = tuple(f"{prefix}field_tables." for prefix in field_embeddings(compressed))
    target = compressed.state_dict()
    given = model.state_dict()
    for key in (k for k in target if not k.startswith(tables)):
        if key not in given or given[key].shape != target[key].shape:
            raise SlimctrError(f"cannot compress this model: {key} has no counterpart in it")
        target[key] = given[key]
    compressed.load_state_dict(target)
    for name, module in compressed.named_modules():
        if not isinstance(module, FieldEmbedding):
            continue
        source = dense[name]
        assert isinstance(source, FieldEmbedding)
        for index, table in enumerate(module.field_tables):  # none in a dense first-order term
            with torch.no_grad():
                if isinstance(table, CompressedTable):
                    table.fill(source.table(names[index]))
                else:
                    assert isinstance(table, nn.Embedding)
                    table.weight.copy_(source.table(names[index]))
    return compressed.eval(), compressed_schema


def compress(
    run_dir: Path,
    codec: str | Mapping[str, str],
    out: Path | None = None,
    dense: str | None = None,
) -> dict[str, Any]:
    """Compress the finished run ``run_dir``'s model (its tables by ``codec``; its dense layers
    too with ``dense="int8"``, ``slimctr.compress.dense``), score it on the run's store
    (validation and test) and, with ``out``, write it as a bundle there; returns the scores and
    sizes beside the float32 model's."""
    if dense not in (None, "int8"):
        raise SlimctrError(f"dense layers compress to int8 only, got {dense!r}")
    config, model, store = run.load_run(Path(run_dir))
    bundle = run.load_model(Path(run_dir))
    compressed, compressed_schema = compress_model(config, model, bundle.schema, codec)
    if dense is not None:
        int8_dense(compressed)

    def scored(scored_model: nn.Module, split: str) -> dict[str, float]:  # as the run scored
        batch = config.train.eval_batch_size
        return score(scored_model, store, split, batch_size=batch, bf16=bundle.bf16)

    metrics: dict[str, Any] = {
        "codec": codec if isinstance(codec, str) else dict(codec),
        "dense": dense or "float32",
        "valid": scored(compressed, "valid"),
        "test": scored(compressed, "test"),
        **run.model_size(compressed),
    }
    source = run.model_size(model)
    metrics["float32"] = {
        "test": scored(model, "test"),
        "embedding_bytes": source["embedding_bytes"],
    }
    if out is not None:
        out = Path(out).resolve()
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise SlimctrError(f"--out {out} already exists and is not empty; give a new folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(out, "compress"):
            remove_leftovers(out)
            with staged(out) as staging:
                write_bundle(
                    staging,
                    config=config,
                    model=compressed,
                    store=store,
                    metrics=metrics,
                    versions=versions(),
                    schema=compressed_schema,
                )
        metrics["bundle_bytes"] = sum(f.stat().st_size for f in out.iterdir())
        metrics["bundle"] = str(out)
    return metrics


# What ``slimctr compress --sweep`` scores: every format, the scale granularities, PCA fractions.
SWEEP = (
    "fp16",
    "bf16",
    "int8",
    "int8@row",
    "fp8-e4m3",
    "fp8-e4m3@block64",
    "fp8-e4m3@field",
    "fp8-e5m2",
    "binary",
    "pca:0.75",
    "pca:0.5",
    "pca:0.25",
    "pca:0.5+fp8-e4m3",
    "pca:0.5+int8",
)


def sweep(run_dir: Path, out: Path, codecs: tuple[str, ...] = SWEEP) -> list[dict[str, Any]]:
    """Score ``run_dir``'s model under each codec; write ``out/sweep.json``, a table
    (``sweep.md``) and test AUC against embedding bytes (``sweep.png``)."""
    rows = [compress(run_dir, codec) for codec in codecs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", rows)
    base = rows[0]["float32"]
    lines = [
        f"Compression sweep of {run_dir}: test AUC against embedding bytes (float32: AUC "
        f"{base['test']['auc']:.5f}, {base['embedding_bytes']:,} bytes). Tables are stored and "
        "scored compressed (nothing simulated); bytes include every scale, minimum, step, "
        "component and mean.",
        "",
        "| codec | test AUC | difference | test logloss | embedding bytes | x smaller |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['codec']} | {row['test']['auc']:.5f} | "
            f"{row['test']['auc'] - base['test']['auc']:+.5f} | {row['test']['logloss']:.5f} | "
            f"{row['embedding_bytes']:,} | {base['embedding_bytes'] / row['embedding_bytes']:.1f} |"
        )
    with atomic_path(out / "sweep.md") as staged_file:
        staged_file.write_text("\n".join(lines) + "\n")
    _plot(rows, base, out / "sweep.png")
    return rows


def _plot(rows: list[dict[str, Any]], base: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.scatter([base["embedding_bytes"]], [base["test"]["auc"]], marker="*", s=150,
                 color="black", label="float32")  # fmt: skip
    for row in rows:
        axis.scatter([row["embedding_bytes"]], [row["test"]["auc"]], s=25)
        axis.annotate(str(row["codec"]), (row["embedding_bytes"], row["test"]["auc"]),
                      fontsize=7, xytext=(3, 3), textcoords="offset points")  # fmt: skip
    axis.set_xscale("log")
    axis.set_xlabel("embedding bytes stored (log)")
    axis.set_ylabel("test AUC")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as staged_file:
        figure.savefig(staged_file, dpi=110, format="png")
    plt.close(figure)
