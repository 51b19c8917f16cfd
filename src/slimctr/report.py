"""The explanation report folder: PNG figures, CSV tables, the summary and one HTML page.

``explain_run(RUN_DIR, OUT)`` writes::

    report.html              one self-contained page (figures embedded as base64 data URIs)
    interactions_layer<l>.png    the F x F block-norm heatmap of each cross layer
    importance.png           mean field-wise gate per layer and field       (models with gates)
    instance_<k>.png         bit-wise and field-wise gates of example k     (models with gates)
    fdo_widths.png           FDO width against mean importance, with Pearson's r
    fields.csv, interactions.csv, pairs.csv, ...   ``Explanation.to_frames``
    summary.txt

Gate colours are centred at 0.5 (red above: the layer lets the field's crossed signal through,
blue below: it holds it back), as in the GDCN paper's figures. Figures are drawn on the Agg
canvas directly, without pyplot, so nothing global changes; their sizes grow with F so that
39 Criteo field names stay readable.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from slimctr.bundle import Bundle
from slimctr.data.batch import Batch
from slimctr.data.store import open_store
from slimctr.errors import SlimctrError
from slimctr.explain import (
    DEFAULT_INSTANCES,
    FLAT_GATES,
    Explanation,
    explain_rows,
    gather,
    pair_strengths,
    sample_rows,
)
from slimctr.files import staged

GATE_COLOURS = "RdBu_r"  # blue (0) .. white (0.5) .. red (1)
DPI = 110


def explain_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    instances: int = DEFAULT_INSTANCES,
    variance_ratio: float = 0.95,
    seed: int = 0,
    normalise: bool = True,
    data_dir: str | Path | None = None,
    source: str | Path | None = None,
    columns: Sequence[str] | None = None,
    methods: tuple[str, ...] = (),
    split: str = "test",
) -> Explanation:
    """Explain a finished run's or a bundle's model (``slimctr explain``) and write the folder
    ``out``.

    The instances: ``instances`` rows of ``split`` drawn with ``seed`` from the run's store, or from
    ``data_dir`` (a store encoded the same way), or from the labelled file ``source`` (which a
    bundle needs, having no store; ``columns`` names a headerless CSV's columns). FDO widths use
    ``variance_ratio``; block norms are divided by sqrt(d_i d_j) unless ``normalise`` is off.
    ``methods``: those of ``slimctr.compare`` to run beside the gates and the heatmap. ``out``
    must be new or empty; it is built in a temporary sibling folder and renamed into place, so
    it appears complete or not at all.
    """
    from slimctr.training.run import load_model, training_store

    run_dir, out = Path(run_dir), Path(out).resolve()  # see files.staged
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SlimctrError(f"--out {out} already exists and is not empty; give a new folder")
    bundle = load_model(run_dir)
    if source is not None:
        batch, rows = sample_file(bundle, Path(source), instances, seed, columns)
        where = f"file {Path(source).name}"
    else:
        store = open_store(Path(data_dir) if data_dir is not None else training_store(run_dir))
        bundle.check_store(store)
        rows, where = sample_rows(store, split, instances, seed), split
        batch = gather(store, where, rows)
    explanation = explain_rows(
        bundle.module,
        batch,
        bundle.schema,
        rows,
        model_name=bundle.config.model_name,
        run_dir=str(run_dir),
        variance_ratio=variance_ratio,
        seed=seed,
        split=where,
        normalise=normalise,
        methods=methods,
    )
    with staged(out) as staging:
        write_report(explanation, staging)
    return explanation


def sample_file(
    bundle: Bundle, source: Path, instances: int, seed: int, columns: Sequence[str] | None = None
) -> tuple[Batch, np.ndarray]:
    """``instances`` labelled rows of ``source`` drawn uniformly without replacement (each row
    gets a seeded random key; the smallest keys win), in one pass and in memory bounded by
    ``instances`` rows and one batch; with their 0-based row numbers, in drawing order."""
    if instances < 1:
        raise SlimctrError(f"--instances must be >= 1, got {instances}")
    rng = np.random.default_rng(seed)
    raw = bundle.encoder.open(source, columns)
    kept: Batch | None = None
    keys, rows = np.zeros(0), np.zeros(0, dtype=np.int64)
    seen = 0
    for batch in bundle.encoder.batches(raw, labels=True):
        joined = batch if kept is None else Batch.concat([kept, batch])
        keys = np.concatenate([keys, rng.random(len(batch))])
        rows = np.concatenate([rows, np.arange(seen, seen + len(batch))])
        seen += len(batch)
        best = np.argsort(keys, kind="stable")[:instances]
        kept, keys, rows = joined.rows(torch.as_tensor(best)), keys[best], rows[best]
    if kept is None or not len(kept):
        raise SlimctrError(f"{source} has no rows to explain")
    return kept, rows


def write_report(explanation: Explanation, folder: Path) -> Path:
    """Write every file of the report into ``folder`` (which must exist); returns the page."""
    for name, frame in explanation.to_frames().items():
        frame.write_csv(folder / f"{name}.csv")
    (folder / "summary.txt").write_text(explanation.summary + "\n")
    sections = []
    for title, text, figures in _sections(explanation):
        images = []
        for name, figure in figures:
            png = folder / f"{name}.png"
            FigureCanvasAgg(figure).print_png(str(png))
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            images.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        sections.append(
            f"<h2>{html.escape(title)}</h2>\n<p>{html.escape(text)}</p>\n" + "\n".join(images)
        )
    page = folder / "report.html"
    page.write_text(_page(explanation, sections))
    return page


def _sections(e: Explanation) -> list[tuple[str, str, list[tuple[str, Figure]]]]:
    kind = "divided by sqrt(d_i d_j)" if e.normalised else "raw, not divided by block size"
    found = []
    if e.interactions is not None:
        found.append(
            (
                "Field interactions",
                f"Frobenius norm of block (i, j) of each layer's cross matrix W_c ({kind}): rows "
                "are the field taken from c0, columns the field taken from the layer input.",
                [
                    (f"interactions_layer{layer + 1}", interaction_figure(e, layer))
                    for layer in range(e.num_layers)
                ],
            )
        )
    if e.importance is not None:
        found.append(
            (
                "Gate importance",
                f"Mean field-wise gate over {e.num_instances:,} instances of {_where(e)}, "
                "per layer and averaged over layers (red: above 0.5, blue: below).",
                [("importance", importance_figure(e))],
            )
        )
        found.append(
            (
                "Single instances",
                "Bit-wise gates (every entry of the D-vector) and field-wise gates (their mean "
                f"over each field) of rows {', '.join(map(str, e.examples))} of "
                f"{_where(e)}, drawn at random.",
                [(f"instance_{k + 1}", instance_figure(e, k)) for k in range(len(e.examples))],
            )
        )
    if e.rankings is not None and e.rankings.fields:
        found.append(
            (
                "Methods side by side",
                f"Each method's rank of each field (1: most important) over {e.num_instances:,} "
                f"instances of {_where(e)}; fields ordered by their mean rank. The summary gives "
                "each method's scores, its top pairs and the methods' rank agreement.",
                [("methods", methods_figure(e))],
            )
        )
    if e.fdo_widths is not None and e.importance is not None:
        found.append(
            (
                "FDO widths and importance",
                f"Width FDO gives each field at variance ratio {e.variance_ratio}, against its "
                "mean gate averaged over layers.",
                [("fdo_widths", fdo_figure(e))],
            )
        )
    return found


def interaction_figure(e: Explanation, layer: int) -> Figure:
    """The F x F heatmap of one layer's block norms, field names on both axes."""
    assert e.interactions is not None
    count = len(e.field_names)
    side = min(max(0.26 * count + 2.5, 4.5), 16.0)
    figure = Figure(figsize=(side + 1.2, side), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(e.interactions[layer], cmap="viridis")
    _field_ticks(axes, e.field_names, x=True, y=True)
    axes.set_xlabel("field j (columns of W_c: the layer input c_l)")
    axes.set_ylabel("field i (rows of W_c: c0)")
    strongest = pair_strengths(e.interactions)[layer]
    np.fill_diagonal(strongest, -np.inf)
    i, j = np.unravel_index(np.argmax(strongest), strongest.shape)
    pair = f"{e.field_names[i]} x {e.field_names[j]}"
    axes.set_title(f"{e.model_name}, cross layer {layer + 1}: strongest pair {pair}")
    figure.colorbar(image, ax=axes, shrink=0.8, label="||W_ij||_F")
    return figure


def importance_figure(e: Explanation) -> Figure:
    """Mean field-wise gate per layer (rows) and field (columns), plus the layer mean.

    Nearly flat gates (spread below ``FLAT_GATES``) would show as one blank colour, so their
    colour scale is stretched to their own range and the title says so: the ranking is still
    there to see, with the summary's caution beside it.
    """
    assert e.importance is not None
    rows = np.vstack([e.importance, e.importance.mean(axis=0)])
    labels = [f"layer {k + 1}" for k in range(e.num_layers)] + ["mean"]
    flat = float(np.ptp(rows[-1])) < FLAT_GATES
    size = _strip_size(len(e.field_names), len(labels))
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    norm = _gate_norm(rows, floor=1e-6 if flat else 0.05)
    image = axes.imshow(rows, cmap=GATE_COLOURS, norm=norm, aspect="auto")
    _field_ticks(axes, e.field_names, x=True, y=False)
    axes.set_yticks(range(len(labels)), labels)
    if len(e.field_names) <= 20:
        for (r, c), value in np.ndenumerate(rows):
            text = f"{value:.4f}" if flat else f"{value:.2f}"
            dark = abs(float(norm(value)) - 0.5) > 0.35  # white text on the strongest colours
            colour = "white" if dark else "black"
            axes.text(c, r, text, ha="center", va="center", fontsize=6 if flat else 7, color=colour)
    title = f"{e.model_name}: mean field-wise gate over {e.num_instances:,} instances"
    if flat:
        spread = max(float(np.abs(rows - 0.5).max()), 1e-6)  # what the colour scale spans
        title += f"\nnearly flat: colours stretched to 0.5 +- {spread:.4f}"
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="gate", shrink=0.9)
    return figure


def instance_figure(e: Explanation, k: int) -> Figure:
    """Bit-wise (top) and field-wise (bottom) gates of example ``k``, one row per layer."""
    assert e.example_bitwise is not None and e.example_fieldwise is not None
    bits, fields = e.example_bitwise[:, k], e.example_fieldwise[:, k]  # (L, D), (L, F)
    width, height = _strip_size(len(e.field_names), e.num_layers)
    figure = Figure(figsize=(width, 2 * height), dpi=DPI, layout="constrained")
    top, bottom = figure.subplots(2, 1)
    edges = np.cumsum(e.field_dims)
    for axes, values, title in ((top, bits, "bit-wise"), (bottom, fields, "field-wise")):
        image = axes.imshow(values, cmap=GATE_COLOURS, norm=_gate_norm(values), aspect="auto")
        axes.set_yticks(range(e.num_layers), [f"layer {n + 1}" for n in range(e.num_layers)])
        axes.set_title(f"row {e.examples[k]} of {_where(e)}: {title} gates")
        figure.colorbar(image, ax=axes, label="gate", shrink=0.9)
    centres = edges - np.asarray(e.field_dims) / 2 - 0.5
    top.set_xticks(centres, e.field_names, rotation=90, fontsize=_tick_size(len(e.field_names)))
    for edge in edges[:-1]:
        top.axvline(edge - 0.5, color="grey", linewidth=0.4)
    _field_ticks(bottom, e.field_names, x=True, y=False)
    return figure


def methods_figure(e: Explanation) -> Figure:
    """Ranks of the fields (columns) by each method (rows), annotated where there is room."""
    assert e.rankings is not None
    methods = list(e.rankings.fields)
    ranks = np.array(
        [
            [sorted(scores, key=lambda n: -scores[n]).index(name) + 1 for name in e.field_names]
            for scores in e.rankings.fields.values()
        ]
    )  # (methods, F)
    order = np.argsort(ranks.mean(axis=0), kind="stable")
    names = tuple(e.field_names[i] for i in order)
    figure = Figure(figsize=_strip_size(len(names), len(methods)), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(ranks[:, order], cmap="viridis_r", aspect="auto")
    _field_ticks(axes, names, x=True, y=False)
    axes.set_yticks(range(len(methods)), methods)
    if len(names) <= 40:
        for (r, c), value in np.ndenumerate(ranks[:, order]):
            colour = "black" if value <= len(names) / 2 else "white"  # light cells: dark text
            axes.text(c, r, str(value), ha="center", va="center", fontsize=7, color=colour)
    axes.set_title(f"{e.model_name}: field ranks by method (1 = most important)")
    figure.colorbar(image, ax=axes, label="rank", shrink=0.9)
    return figure


def _where(e: Explanation) -> str:
    """Where the instances came from, as a phrase: "the test split", "file test.csv"."""
    return e.split if e.split.startswith("file ") else f"the {e.split} split"


def fdo_figure(e: Explanation) -> Figure:
    """FDO width against mean importance (averaged over layers), one labelled point per field."""
    assert e.fdo_widths is not None and e.importance is not None
    mean = e.importance.mean(axis=0)
    side = min(max(0.18 * len(e.field_names) + 4.0, 6.5), 12.0)
    figure = Figure(figsize=(side * 1.3, side), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.scatter(mean, e.fdo_widths, color="tab:red", zorder=2)
    for name, x, y in zip(e.field_names, mean, e.fdo_widths, strict=True):
        axes.annotate(name, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7)
    r = e.correlations.get("layer mean")
    axes.set_title(
        f"FDO width at variance ratio {e.variance_ratio} vs importance: Pearson r = "
        + ("n/a" if r is None else f"{r:.2f}")
    )
    axes.set_xlabel("mean field-wise gate, averaged over layers")
    axes.set_ylabel("FDO width d_f")
    axes.grid(alpha=0.3)
    return figure


def _field_ticks(axes: Axes, names: tuple[str, ...], *, x: bool, y: bool) -> None:
    size = _tick_size(len(names))
    if x:
        axes.set_xticks(range(len(names)), names, rotation=90, fontsize=size)
    if y:
        axes.set_yticks(range(len(names)), names, fontsize=size)


def _tick_size(count: int) -> float:
    return 9.0 if count <= 20 else 7.0


def _strip_size(fields: int, rows: int) -> tuple[float, float]:
    """Width and height (inches) of a rows x fields strip: about 0.3 inch per field."""
    return min(max(0.3 * fields + 3.0, 6.0), 20.0), 0.45 * rows + 1.8


def _gate_norm(values: np.ndarray, floor: float = 0.05) -> TwoSlopeNorm:
    """Centred at 0.5; symmetric about it, so equal distances from 0.5 get equal intensity. The
    scale reaches at least ``floor`` either side, so that noise does not look like a signal."""
    spread = max(float(np.abs(values - 0.5).max()), floor)
    return TwoSlopeNorm(vcenter=0.5, vmin=0.5 - spread, vmax=0.5 + spread)


def _page(e: Explanation, sections: list[str]) -> str:
    title = f"slimctr explanation: {e.model_name}"
    gates = "gates" if e.importance is not None else "no gates"
    facts = (
        f"Run <code>{html.escape(e.run_dir)}</code>, model <b>{html.escape(e.model_name)}</b>, "
        f"{e.num_layers} cross layers, {len(e.field_names)} fields, {gates}, "
        f"{e.num_instances:,} instances of {html.escape(_where(e))}."
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ font-size: 1.25em; margin-top: 1.6em; }}
pre {{ background: #f6f6f6; padding: 1em; white-space: pre-wrap; }}
img {{ max-width: 100%; display: block; margin: 0.8em 0; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{facts}</p>
<h2>Summary</h2>
<pre>{html.escape(e.summary)}</pre>
{chr(10).join(sections)}
</body></html>
"""
