"""Field embeddings: one table per categorical field, one learned vector per numeric field.

For a sample with categorical ids x_f and numeric values z_f, field f is embedded as

    e_f = E_f[x_f]        E_f in R^{n_f x d_f}   (categorical field: a row of its own table)
    e_f = z_f * v_f       v_f in R^{d_f}          (numeric field: its value times a learned vector)

and the fields are either stacked, (B, F, d) when every d_f = d (FM-style models), or
concatenated, c0 = [e_1 || ... || e_F] in R^D with D = sum_f d_f (DCN, DCN-V2, GDCN; GDCN spec 2.1).
Fields appear in ``Schema.fields`` order in both layouts, so slice f of c0 belongs to field f.

Stacking needs one width. With ``align_dim=K`` the Dimension Alignment Layer (``nn.align``, GDCN
spec 4.3) maps every field to width K after the lookup, a_f = e_f W_f with W_f in R^{d_f x K},
and both layouts are built from the a_f: stacked (B, F, K), concatenated (B, F K).

A field whose schema gives ``kept_rows`` r_f (a model retrained after OptEmbed or OptFS pruned
feature values) stores only r_f rows: its id-to-row map, ``row_index`` (int32 in memory; a bundle
stores a bit per id, ``nn.pruned``), sends a kept id to its row and every other id to a zero
vector, which no table stores.

When every categorical field gives ``kept_entries`` (a model retrained after PEP masked single
entries), the fused table has ``entry_mask``, a boolean of its shape saved with the weights: a
lookup multiplies by it, so masked entries are zeros and get no gradient. The bundle stores such a
table as its non-zero values and the mask packed to bits (``slimctr.nn.masked``).

A field whose schema names a ``codec`` keeps its table compressed (``CompressedTable``: the
codec's stored tensors, decoded row by row at lookup); the tables are then one per field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from slimctr.compress.table import CompressedTable
from slimctr.data.batch import Batch
from slimctr.errors import SlimctrError
from slimctr.nn.align import DimensionAlignment
from slimctr.schema import FieldSpec, Schema


class FieldEmbedding(nn.Module):
    """Embeds every field of a ``Batch``; per-field widths allowed.

    ``embedding_dim`` is one width for all fields or a width per field name (every field named).
    Tables are initialised xavier-uniform per field, U(+-sqrt(6 / (n_f + d_f))) as in the GDCN
    reference code (spec 2.6), or N(0, init_std^2) when ``init_std`` is given. A numeric field's
    vector is initialised like a one-row table.

    When all categorical widths are equal the tables live in ONE ``nn.Embedding`` with per-field
    row offsets (field f owns rows offsets[f] .. offsets[f] + n_f), so a batch is one lookup;
    ``table(name)`` returns a view of a field's rows either way. ``sparse=True`` (or the
    ``sparse`` property, or ``set_sparse_gradients``) makes the tables' gradients sparse, for
    ``torch.optim.SparseAdam``; numeric vectors always get dense gradients.

    ``align_dim=K`` adds ``alignment``, a ``DimensionAlignment`` (a_f = e_f W_f, no bias: the
    paper does not publish whether there is one, spec 4.3), so fields of different widths
    stack: ``forward`` gives (B, F, K), ``flat`` and ``output_dim`` the aligned concatenation
    (F K), the one width a model sees; ``field_dims`` and ``table`` still describe the tables
    (d_f), ``projection`` gives W_f. Its sum_f d_f K parameters are model parameters, so they
    count in the model's size. It is created and drawn after the tables, which therefore start
    from the same values with or without it; W_f is xavier-uniform whatever ``init_std`` says
    (N(0, 1e-4^2) would shrink a_f, and the gradients of the tables, by 1e-4).
    """

    offsets: Tensor  # (F_cat,) int32: first row of each categorical field in the fused table
    numeric_column: Tensor  # (sum of numeric d_f,): the numeric column each vector entry scales
    row_index: Tensor  # (sum of n_f over pruned fields,) int32: id -> stored row, -1 for none
    map_starts: Tensor  # (F_cat,) int32: where each field's map starts in row_index; -1 unpruned
    entry_mask: Tensor  # the fused table's shape, bool: which entries a masked model keeps

    def __init__(
        self,
        schema: Schema,
        embedding_dim: int | Mapping[str, int],
        init_std: float | None = None,
        sparse: bool = False,
        align_dim: int | None = None,
    ) -> None:
        super().__init__()
        if not schema.fields:
            raise SlimctrError("FieldEmbedding needs at least one field, the schema has none")
        if init_std is not None and not init_std > 0:
            raise SlimctrError(f"embedding init_std must be > 0 or None, got {init_std}")
        self._specs: tuple[FieldSpec, ...] = schema.fields
        self._dims: dict[str, int] = _field_widths(schema, embedding_dim)
        self._runs = _kind_runs(self._specs)
        widths = set(self._dims.values())
        self._common_width = widths.pop() if len(widths) == 1 else None

        categorical = schema.categorical
        sizes = [f.vocab_size if f.kept_rows is None else f.kept_rows for f in categorical]
        cat_dims = [self._dims[f.name] for f in categorical]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self._rows = {f.name: (s, n) for f, s, n in zip(categorical, starts, sizes, strict=True)}
        self._cat_index = {f.name: i for i, f in enumerate(categorical)}
        self.fused_table: nn.Embedding | None = None
        self.field_tables = nn.ModuleList()
        self._compressed = {f.name for f in categorical if f.codec is not None}
        if categorical and len(set(cat_dims)) == 1 and not self._compressed:
            self.fused_table = nn.Embedding(sum(sizes), cat_dims[0], sparse=sparse)
        else:
            self.field_tables.extend(
                nn.Embedding(n, d, sparse=sparse)
                if f.codec is None
                else CompressedTable(f.codec, n, d)
                for f, n, d in zip(categorical, sizes, cat_dims, strict=True)
            )
        # int32 like the ids, so adding them needs no upcast.
        self.register_buffer("offsets", torch.tensor(starts, dtype=torch.int32), persistent=False)
        self._pruned = {f.name for f in categorical if f.kept_rows is not None}
        self._maps: dict[str, tuple[int, int]] = {}  # pruned field -> (start in row_index, n_f)
        if self._pruned:
            self._add_row_maps(categorical)
        self._masked = {f.name for f in categorical if f.kept_entries is not None}
        if self._masked:
            if len(self._masked) < len(categorical) or self.fused_table is None:
                raise SlimctrError(
                    "a masked embedding needs kept_entries on every categorical field, all at "
                    "one width"
                )
            mask = torch.ones_like(self.fused_table.weight, dtype=torch.bool)
            self.register_buffer("entry_mask", mask)

        # A search stage's transform of the stacked rows (OptEmbed's masks, OptFS's gates); it is
        # not part of the model: ``forward(rows (B, F, d), batch) -> (B, F, d)``.
        self.row_hook: Callable[[Tensor, Batch], Tensor] | None = None

        # All numeric vectors in one flat parameter, so a batch is one gather and one product.
        num_dims = [self._dims[f.name] for f in schema.numeric]
        self._numeric_slices = {
            f.name: (sum(num_dims[:i]), num_dims[i]) for i, f in enumerate(schema.numeric)
        }
        self.numeric_vectors: nn.Parameter | None = None
        if num_dims:
            self.numeric_vectors = nn.Parameter(torch.empty(sum(num_dims)))
        column_of = [i for i, d in enumerate(num_dims) for _ in range(d)]
        self.register_buffer(
            "numeric_column", torch.tensor(column_of, dtype=torch.long), persistent=False
        )
        self._reset_parameters(init_std)

        # Registered and drawn after the tables, so that their initial values do not change.
        self.alignment: DimensionAlignment | None = None
        if align_dim is not None:
            self.alignment = DimensionAlignment(self.field_dims, align_dim)

    # -- shape ---------------------------------------------------------------------------------

    @property
    def num_fields(self) -> int:
        return len(self._specs)

    @property
    def categorical_positions(self) -> tuple[int, ...]:
        """Where the categorical fields are in output order."""
        return tuple(i for i, f in enumerate(self._specs) if f.kind == "categorical")

    @property
    def field_names(self) -> tuple[str, ...]:
        """Field names in output order (``Schema.fields`` order)."""
        return tuple(f.name for f in self._specs)

    @property
    def field_dims(self) -> tuple[int, ...]:
        """Table width d_f of each field, in output order (before any alignment)."""
        return tuple(self._dims[f.name] for f in self._specs)

    @property
    def aligned_dim(self) -> int | None:
        """K, the width every field is projected to, or None without the alignment layer."""
        return None if self.alignment is None else self.alignment.output_dim

    @property
    def output_dim(self) -> int:
        """The width of ``flat``: D = sum_f d_f, or F K when aligned."""
        if self.aligned_dim is not None:
            return self.num_fields * self.aligned_dim
        return sum(self._dims.values())

    @property
    def sparse(self) -> bool:
        return any(t.sparse for t in self._embedding_modules())

    @sparse.setter
    def sparse(self, enabled: bool) -> None:
        for module in self._embedding_modules():
            module.sparse = enabled

    def table(self, field_name: str) -> Tensor:
        """Field's table, (n_f, d_f), as a view of the parameter (a numeric field: (1, d_f))."""
        if field_name in self._numeric_slices:
            assert self.numeric_vectors is not None
            start, width = self._numeric_slices[field_name]
            return self.numeric_vectors[start : start + width].view(1, width)
        if field_name not in self._cat_index:
            raise KeyError(field_name)
        if self.fused_table is None:
            module = self.field_tables[self._cat_index[field_name]]
            if isinstance(module, CompressedTable):
                return module.decoded()  # a copy: the table is stored compressed
            assert isinstance(module, nn.Embedding)
            return module.weight
        start, rows = self._rows[field_name]
        return self.fused_table.weight.narrow(0, start, rows)

    @property
    def pruned_fields(self) -> tuple[str, ...]:
        """The fields that store only their kept rows."""
        return tuple(f.name for f in self._specs if f.name in self._pruned)

    @torch.no_grad()
    def set_kept(self, field_name: str, ids: Sequence[int] | Tensor) -> None:
        """Make the increasing ``ids`` the kept values of the pruned field ``field_name``, row i
        of its table the one of ids[i]; every other id embeds as zeros."""
        mapping = self.row_map(field_name)
        size = mapping.numel()
        ids = torch.as_tensor(ids, dtype=torch.long)
        kept = self._rows[field_name][1]
        if ids.shape != (kept,) or (ids.numel() and (ids.min() < 0 or ids.max() >= size)):
            raise SlimctrError(f"field {field_name!r} keeps {kept} of {size} ids, got {ids.shape}")
        mapping.fill_(-1)
        mapping[ids] = torch.arange(kept, dtype=torch.int32)

    @property
    def masked(self) -> bool:
        """Whether the tables keep only the entries of ``entry_mask``."""
        return bool(self._masked)

    def mask(self, field_name: str) -> Tensor:
        """Field's entry mask, (rows, d_f) bool, as a view of ``entry_mask``."""
        if field_name not in self._masked:
            raise SlimctrError(f"field {field_name!r} has a dense table, it has no entry mask")
        start, rows = self._rows[field_name]
        return self.entry_mask.narrow(0, start, rows)

    @torch.no_grad()
    def set_mask(self, field_name: str, mask: Tensor) -> None:
        """Keep only the entries of field ``field_name``'s table where ``mask`` (its table's
        shape) is true, as many as the schema's ``kept_entries``; the others become zeros."""
        target = self.mask(field_name)
        spec = next(f for f in self._specs if f.name == field_name)
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != target.shape or int(mask.sum()) != spec.kept_entries:
            raise SlimctrError(
                f"field {field_name!r} keeps {spec.kept_entries} entries of a "
                f"{tuple(target.shape)} table, got a {tuple(mask.shape)} mask with "
                f"{int(mask.sum())}"
            )
        target.copy_(mask)
        self.table(field_name).mul_(mask)

    def kept_ids(self, field_name: str) -> Tensor:
        """The ids of a pruned field that have a row, in row order."""
        return torch.nonzero(self.row_map(field_name) >= 0).flatten()

    def row_map(self, field_name: str) -> Tensor:
        """A pruned field's id-to-row map, (n_f,) int32 with -1 for an id without a row, as a
        view of ``row_index``."""
        if field_name not in self._pruned:
            raise SlimctrError(f"field {field_name!r} keeps all its rows, it has no row map")
        start, size = self._maps[field_name]
        return self.row_index.narrow(0, start, size)

    def projection(self, field_name: str) -> Tensor:
        """Field's alignment map W_f, (d_f, K), as a view of the parameter."""
        if self.alignment is None:
            raise SlimctrError("this FieldEmbedding has no alignment layer (align_dim=None)")
        if field_name not in self.field_names:
            raise KeyError(field_name)
        return self.alignment.projection(self.field_names.index(field_name))

    # -- forward -------------------------------------------------------------------------------

    def forward(self, batch: Batch) -> Tensor:
        """Stacked field embeddings, (B, F, d), every field of one width d; aligned: (B, F, K)."""
        if self.alignment is not None:
            return self.alignment(self._concatenated(batch))  # (B, F, K)
        width = self._common_width
        if width is None:
            raise SlimctrError(_unequal_widths_message(self._specs, self._dims))
        return self._stacked(batch, width)

    def flat(self, batch: Batch) -> Tensor:
        """Concatenated field embeddings c0 = [e_1 || ... || e_F], (B, D); aligned: (B, F K)."""
        if self.alignment is not None:
            return self.forward(batch).flatten(1)  # (B, F K)
        return self._concatenated(batch)

    # -- internals -----------------------------------------------------------------------------

    def _stacked(self, batch: Batch, width: int) -> Tensor:
        blocks: dict[str, Tensor] = {}
        if self.fused_table is not None:
            blocks["categorical"] = self._fused_lookup(batch)  # (B, Fc, d)
        elif self.field_tables:
            blocks["categorical"] = torch.stack(self._field_lookups(batch), dim=1)
        if self.numeric_vectors is not None:
            vectors = self.numeric_vectors.view(-1, width)  # (Fn, d)
            blocks["numeric"] = batch.numeric.unsqueeze(-1) * vectors  # (B, Fn, d)
        if len(self._runs) == 1:
            rows = blocks[self._runs[0][0]]
        else:
            rows = torch.cat([blocks[k][:, start:stop] for k, start, stop in self._runs], dim=1)
        return rows if self.row_hook is None else self.row_hook(rows, batch)

    def _fused_lookup(self, batch: Batch) -> Tensor:
        assert self.fused_table is not None
        rows, keep = self._table_rows(batch)
        index = rows + self.offsets
        looked_up = self.fused_table(index)  # (B, Fc, d)
        if self._masked:
            looked_up = looked_up * self.entry_mask[index.long()]
        return looked_up if keep is None else looked_up * keep.unsqueeze(-1)

    def _table_rows(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """Each categorical id's row in its field's table, (B, Fc), and where the field keeps
        a row for it (None when no field is pruned)."""
        ids = batch.categorical
        if not self._pruned:
            return ids, None
        pruned = self.map_starts >= 0  # (Fc,)
        # int64 indices: ONNX Runtime's GatherND, which indexing exports to, takes no int32
        mapped = self.row_index[torch.where(pruned, ids + self.map_starts, 0).long()]
        rows = torch.where(pruned, mapped, ids)
        keep = rows >= 0
        return rows.clamp(min=0), keep.to(torch.float32)

    def _add_row_maps(self, categorical: tuple[FieldSpec, ...]) -> None:
        """The id-to-row maps of the pruned fields, at first keeping each one's first ids."""
        starts: list[int] = []
        mapping: list[Tensor] = []
        for spec in categorical:
            if spec.kept_rows is None:
                starts.append(-1)
                continue
            start = sum(len(part) for part in mapping)
            self._maps[spec.name] = (start, spec.vocab_size)
            starts.append(start)
            ids = torch.arange(spec.vocab_size, dtype=torch.int32)
            mapping.append(torch.where(ids < spec.kept_rows, ids, -1))
        self.register_buffer("row_index", torch.cat(mapping))
        self.register_buffer(
            "map_starts", torch.tensor(starts, dtype=torch.int32), persistent=False
        )

    def _concatenated(self, batch: Batch) -> Tensor:
        if self._common_width is not None:
            return self._stacked(batch, self._common_width).flatten(1)
        if self.row_hook is not None:
            raise SlimctrError("a search stage's row hook needs every field at one width")
        pieces: dict[str, list[Tensor]] = {}
        if self.fused_table is not None:  # equal categorical widths, but numeric ones differ
            pieces["categorical"] = list(self._fused_lookup(batch).unbind(1))  # (B, d) each
        else:
            pieces["categorical"] = self._field_lookups(batch)
        if self.numeric_vectors is not None:
            # (B, sum of numeric d_f): column numeric_column[j] times vector entry j
            scaled = batch.numeric[:, self.numeric_column] * self.numeric_vectors
            widths = [width for _, width in self._numeric_slices.values()]
            pieces["numeric"] = list(scaled.split(widths, dim=1))
        ordered = [e for kind, start, stop in self._runs for e in pieces[kind][start:stop]]
        return torch.cat(ordered, dim=1)

    def _field_lookups(self, batch: Batch) -> list[Tensor]:
        """Each categorical field's rows from its own table: (B, d_f) each."""
        rows, keep = self._table_rows(batch)
        looked_up = [table(rows[:, i]) for i, table in enumerate(self.field_tables)]
        if keep is not None:
            looked_up = [e * keep[:, i, None] for i, e in enumerate(looked_up)]
        return looked_up

    def _embedding_modules(self) -> list[nn.Embedding]:
        if self.fused_table is not None:
            return [self.fused_table]
        return [t for t in self.field_tables if isinstance(t, nn.Embedding)]

    @torch.no_grad()
    def _reset_parameters(self, init_std: float | None) -> None:
        for spec in self._specs:
            if spec.name in self._compressed:  # filled by its codec
                continue
            weight = self.table(spec.name)
            if init_std is not None:
                weight.normal_(0.0, init_std)
            else:
                rows, width = weight.shape
                bound = math.sqrt(6.0 / (rows + width))
                weight.uniform_(-bound, bound)


def field_embeddings(model: nn.Module) -> dict[str, FieldEmbedding]:
    """The field embeddings of ``model`` by state-dict prefix (``"embedding."``; ``""`` for a
    model that is one)."""
    return {
        f"{name}." if name else "": module
        for name, module in model.named_modules()
        if isinstance(module, FieldEmbedding)
    }


def set_sparse_gradients(model: nn.Module, enabled: bool = True) -> list[Tensor]:
    """Switch every ``FieldEmbedding`` table in ``model`` to sparse (or dense) gradients.

    Returns the table parameters affected, the ones to hand to ``torch.optim.SparseAdam``.
    """
    tables: list[Tensor] = []
    for module in model.modules():
        if isinstance(module, FieldEmbedding):
            module.sparse = enabled
            tables.extend(t.weight for t in module._embedding_modules())
    return tables


def _field_widths(schema: Schema, embedding_dim: int | Mapping[str, int]) -> dict[str, int]:
    names = [f.name for f in schema.fields]
    if isinstance(embedding_dim, Mapping):
        missing = [n for n in names if n not in embedding_dim]
        unknown = [n for n in embedding_dim if n not in names]
        if missing or unknown:
            raise SlimctrError(
                "embedding_dim per field must name every field exactly: "
                f"missing {missing or 'none'}, unknown {unknown or 'none'}"
            )
        dims = {n: embedding_dim[n] for n in names}
    else:
        dims = dict.fromkeys(names, embedding_dim)
    for name, width in dims.items():
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise SlimctrError(
                f"embedding_dim of field {name!r} must be an int >= 1, got {width!r}"
            )
    return dims


def _kind_runs(specs: tuple[FieldSpec, ...]) -> list[tuple[str, int, int]]:
    """Maximal runs of same-kind fields in schema order, as (kind, start, stop) within the kind."""
    runs: list[tuple[str, int, int]] = []
    seen = {"categorical": 0, "numeric": 0}
    for spec in specs:
        index = seen[spec.kind]
        seen[spec.kind] += 1
        if runs and runs[-1][0] == spec.kind:
            runs[-1] = (spec.kind, runs[-1][1], index + 1)
        else:
            runs.append((spec.kind, index, index + 1))
    return runs


def _unequal_widths_message(specs: tuple[FieldSpec, ...], dims: dict[str, int]) -> str:
    groups: dict[int, list[str]] = {}
    for spec in specs:
        groups.setdefault(dims[spec.name], []).append(spec.name)
    listing = "; ".join(f"width {w}: {', '.join(names)}" for w, names in sorted(groups.items()))
    return (
        f"stacking field embeddings to (B, F, d) needs one width, got {listing}; give every field "
        "the same embedding_dim, or set model.embedding_align_dim=K (FieldEmbedding align_dim=K): "
        "FDO's dimension alignment layer, which projects each field to width K"
    )
