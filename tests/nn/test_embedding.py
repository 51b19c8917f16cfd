"""FieldEmbedding: lookups, numeric vectors, layouts, widths, init and sparse gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from slimctr.data.batch import Batch
from slimctr.errors import SlimctrError
from slimctr.nn.embedding import FieldEmbedding, set_sparse_gradients
from slimctr.schema import FieldSpec, Schema

# Numeric and categorical fields interleaved, to check that outputs follow schema order.
SCHEMA = Schema(
    label="y",
    fields=(
        FieldSpec(name="n0", kind="numeric"),
        FieldSpec(name="a", kind="categorical", vocab_size=5),
        FieldSpec(name="b", kind="categorical", vocab_size=7),
        FieldSpec(name="n1", kind="numeric"),
    ),
)
BATCH = Batch(
    categorical=torch.tensor([[1, 2], [4, 6], [0, 0]], dtype=torch.int32),
    numeric=torch.tensor([[0.5, -1.0], [2.0, 0.0], [-3.0, 1.5]]),
    labels=torch.zeros(3),
)


def _set_tables(emb: FieldEmbedding) -> None:
    """Table rows that identify their field and id: field k, id i, column j -> 100k + 10i + j."""
    with torch.no_grad():
        for k, name in enumerate(emb.field_names):
            table = emb.table(name)
            rows, cols = table.shape
            values = [[100 * k + 10 * i + j for j in range(cols)] for i in range(rows)]
            table.copy_(torch.tensor(values, dtype=torch.float32))


def _expected_fields(emb: FieldEmbedding, batch: Batch) -> list[torch.Tensor]:
    """Field embeddings from the definition, e_f = E_f[x_f] or z_f * v_f, in schema order."""
    out, cat, num = [], 0, 0
    for spec in SCHEMA.fields:
        table = emb.table(spec.name).detach()
        if spec.kind == "categorical":
            out.append(table[batch.categorical[:, cat].long()])
            cat += 1
        else:
            out.append(batch.numeric[:, num : num + 1] * table[0])
            num += 1
    return out


def test_equal_widths_stack_and_flatten_in_schema_order() -> None:
    emb = FieldEmbedding(SCHEMA, 3)
    _set_tables(emb)
    expected = torch.stack(_expected_fields(emb, BATCH), dim=1)
    assert emb.field_names == ("n0", "a", "b", "n1")
    assert (emb.num_fields, emb.output_dim, emb.field_dims) == (4, 12, (3, 3, 3, 3))
    torch.testing.assert_close(emb(BATCH), expected)
    torch.testing.assert_close(emb.flat(BATCH), expected.flatten(1))
    # By hand: row 0, field a (k=1) has id 1 -> 110, 111, 112; n0 = 0.5 * (0, 1, 2).
    assert emb(BATCH)[0, 1].tolist() == [110.0, 111.0, 112.0]
    assert emb(BATCH)[0, 0].tolist() == [0.0, 0.5, 1.0]


def test_fused_layout_matches_separate_tables() -> None:
    emb = FieldEmbedding(SCHEMA, 4)
    assert emb.fused_table is not None and emb.fused_table.weight.shape == (5 + 7, 4)
    assert emb.table("b").data_ptr() == emb.fused_table.weight[5:].data_ptr()  # a view
    separate = {n: nn.Embedding.from_pretrained(emb.table(n).detach()) for n in ("a", "b")}
    out = emb(BATCH)
    torch.testing.assert_close(out[:, 1], separate["a"](BATCH.categorical[:, 0].long()))
    torch.testing.assert_close(out[:, 2], separate["b"](BATCH.categorical[:, 1].long()))


def test_per_field_widths_concatenate() -> None:
    widths = {"n0": 2, "a": 3, "b": 1, "n1": 4}
    emb = FieldEmbedding(SCHEMA, widths)
    _set_tables(emb)
    assert emb.field_dims == (2, 3, 1, 4) and emb.output_dim == 10
    assert emb.table("a").shape == (5, 3) and emb.table("n1").shape == (1, 4)
    expected = torch.cat(_expected_fields(emb, BATCH), dim=1)
    torch.testing.assert_close(emb.flat(BATCH), expected)


def test_equal_categorical_widths_stay_fused_when_numeric_widths_differ() -> None:
    emb = FieldEmbedding(SCHEMA, {"n0": 1, "a": 3, "b": 3, "n1": 2})
    assert emb.fused_table is not None
    _set_tables(emb)
    torch.testing.assert_close(emb.flat(BATCH), torch.cat(_expected_fields(emb, BATCH), dim=1))


def test_stacking_unequal_widths_names_the_fields_and_the_fix() -> None:
    emb = FieldEmbedding(SCHEMA, {"n0": 2, "a": 3, "b": 3, "n1": 2})
    fix = r"width 2: n0, n1; width 3: a, b; .*model\.embedding_align_dim=K.*alignment layer"
    with pytest.raises(SlimctrError, match=fix):
        emb(BATCH)


# -- the dimension alignment layer -------------------------------------------------------------

PLAN = {"n0": 2, "a": 3, "b": 1, "n1": 4}  # every layout: separate tables, numeric widths differ
LAYOUTS = [PLAN, 3, {"n0": 1, "a": 3, "b": 3, "n1": 2}]  # ... one fused table; fused, unequal


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("widths", LAYOUTS, ids=["separate", "equal", "fused"])
def test_alignment_projects_every_field_to_one_width(widths: object) -> None:
    emb = FieldEmbedding(SCHEMA, widths, align_dim=5)  # type: ignore[arg-type]
    _set_tables(emb)
    fields = zip(_expected_fields(emb, BATCH), emb.field_names, strict=True)
    expected = torch.stack([e @ emb.projection(name).detach() for e, name in fields], dim=1)
    assert (emb.aligned_dim, emb.output_dim) == (5, 4 * 5)
    assert emb(BATCH).shape == (3, 4, 5)  # numeric fields n0, n1 are aligned like the others
    torch.testing.assert_close(emb(BATCH), expected)
    torch.testing.assert_close(emb.flat(BATCH), expected.flatten(1))
    for name, width in zip(emb.field_names, emb.field_dims, strict=True):
        assert emb.table(name).shape[1] == width  # the tables keep their widths d_f
        assert emb.projection(name).shape == (width, 5)


@pytest.mark.parametrize("widths", LAYOUTS, ids=["separate", "equal", "fused"])
def test_alignment_adds_sum_of_field_widths_times_k_parameters(widths: object) -> None:
    plain = FieldEmbedding(SCHEMA, widths)  # type: ignore[arg-type]
    aligned = FieldEmbedding(SCHEMA, widths, align_dim=6)  # type: ignore[arg-type]
    assert aligned.field_dims == plain.field_dims
    assert _count(aligned) == _count(plain) + sum(plain.field_dims) * 6  # spec 4.3, 10.13


def test_align_dim_none_changes_nothing_and_alignment_leaves_the_tables_alone() -> None:
    torch.manual_seed(0)
    default = FieldEmbedding(SCHEMA, PLAN)
    after_default = torch.get_rng_state()
    torch.manual_seed(0)
    explicit = FieldEmbedding(SCHEMA, PLAN, align_dim=None)
    assert torch.equal(torch.get_rng_state(), after_default)
    torch.manual_seed(0)
    aligned = FieldEmbedding(SCHEMA, PLAN, align_dim=5)
    assert default.alignment is None and default.aligned_dim is None
    assert list(dict(default.named_modules())) == list(dict(explicit.named_modules()))
    names = list(default.state_dict())
    assert list(explicit.state_dict()) == names
    assert list(aligned.state_dict()) == [*names, "alignment.weight"]  # registered last
    for name in names:  # same values: the projections are drawn after the tables
        assert torch.equal(explicit.state_dict()[name], default.state_dict()[name])
        assert torch.equal(aligned.state_dict()[name], default.state_dict()[name])
    with pytest.raises(SlimctrError, match="no alignment layer"):
        default.projection("a")
    with pytest.raises(KeyError):
        aligned.projection("nope")


def test_alignment_with_sparse_tables() -> None:
    torch.manual_seed(0)
    dense = FieldEmbedding(SCHEMA, PLAN, align_dim=3)
    sparse = FieldEmbedding(SCHEMA, PLAN, sparse=True, align_dim=3)
    sparse.load_state_dict(dense.state_dict())
    assert len(set_sparse_gradients(sparse)) == 2  # the two tables, not the projections
    weights = torch.randn(3, 4, 3)
    (dense(BATCH) * weights).sum().backward()
    (sparse(BATCH) * weights).sum().backward()
    for (name, p_dense), p_sparse in zip(
        dense.named_parameters(), sparse.parameters(), strict=True
    ):
        assert p_sparse.grad is not None and p_dense.grad is not None
        assert p_sparse.grad.is_sparse == name.startswith("field_tables"), name
        assert p_dense.grad.abs().sum() > 0, name
        torch.testing.assert_close(p_sparse.grad.to_dense(), p_dense.grad)


@pytest.mark.parametrize("align_dim", [0, True, 2.5])
def test_bad_align_dim_raises(align_dim: object) -> None:
    with pytest.raises(SlimctrError, match="alignment width K must be an int >= 1"):
        FieldEmbedding(SCHEMA, PLAN, align_dim=align_dim)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("widths", "message"),
    [
        (0, "field 'n0' must be an int >= 1, got 0"),
        ({"n0": 2, "a": 3, "b": 3}, r"missing \['n1'\], unknown none"),
        ({"n0": 2, "a": 3, "b": 3, "n1": 1, "zz": 4}, r"missing none, unknown \['zz'\]"),
    ],
)
def test_bad_widths_raise(widths: object, message: str) -> None:
    with pytest.raises(SlimctrError, match=message):
        FieldEmbedding(SCHEMA, widths)  # type: ignore[arg-type]


def test_only_categorical_or_only_numeric_fields() -> None:
    cat_only = Schema(label="y", fields=SCHEMA.categorical)
    num_only = Schema(label="y", fields=SCHEMA.numeric)
    empty = torch.zeros(3, 0)
    cat_batch = Batch(categorical=BATCH.categorical, numeric=empty, labels=BATCH.labels)
    num_batch = Batch(categorical=empty.to(torch.int32), numeric=BATCH.numeric, labels=BATCH.labels)
    assert FieldEmbedding(cat_only, 2)(cat_batch).shape == (3, 2, 2)
    assert FieldEmbedding(num_only, 2).flat(num_batch).shape == (3, 4)
    assert FieldEmbedding(num_only, {"n0": 1, "n1": 3}).flat(num_batch).shape == (3, 4)


def test_table_is_a_live_view_and_unknown_names_raise() -> None:
    emb = FieldEmbedding(SCHEMA, {"n0": 2, "a": 3, "b": 4, "n1": 1})
    with torch.no_grad():
        emb.table("b")[6] = 7.0
    assert emb.flat(BATCH)[1, 5:9].tolist() == [7.0] * 4
    with pytest.raises(KeyError):
        emb.table("nope")


def test_xavier_init_per_field_and_normal_init() -> None:
    big = Schema(
        label="y",
        fields=(
            FieldSpec(name="small", kind="categorical", vocab_size=4),
            FieldSpec(name="large", kind="categorical", vocab_size=20_000),
            FieldSpec(name="z", kind="numeric"),
        ),
    )
    torch.manual_seed(0)
    emb = FieldEmbedding(big, 8)
    for name, rows in (("small", 4), ("large", 20_000), ("z", 1)):
        bound = math.sqrt(6 / (rows + 8))
        table = emb.table(name)
        assert table.abs().max() <= bound
        if rows > 1000:  # U(-b, b) has std b / sqrt(3)
            assert abs(table.std().item() - bound / math.sqrt(3)) < 0.05 * bound
    normal = FieldEmbedding(big, 8, init_std=1e-4)
    assert abs(normal.table("large").std().item() - 1e-4) < 5e-6
    with pytest.raises(SlimctrError, match="init_std"):
        FieldEmbedding(big, 8, init_std=0.0)


@pytest.mark.parametrize("widths", [3, {"n0": 2, "a": 3, "b": 1, "n1": 4}])
def test_sparse_gradients_equal_dense_ones(widths: object) -> None:
    torch.manual_seed(0)
    dense = FieldEmbedding(SCHEMA, widths)  # type: ignore[arg-type]
    sparse = FieldEmbedding(SCHEMA, widths, sparse=True)  # type: ignore[arg-type]
    sparse.load_state_dict(dense.state_dict())
    assert sparse.sparse and not dense.sparse
    weights = torch.randn(3, dense.output_dim)
    (dense.flat(BATCH) * weights).sum().backward()
    (sparse.flat(BATCH) * weights).sum().backward()
    for (name, p_dense), p_sparse in zip(
        dense.named_parameters(), sparse.parameters(), strict=True
    ):
        assert p_sparse.grad is not None and p_dense.grad is not None
        assert p_sparse.grad.is_sparse == (name != "numeric_vectors")
        torch.testing.assert_close(p_sparse.grad.to_dense(), p_dense.grad)


def test_set_sparse_gradients_switches_every_table() -> None:
    model = nn.ModuleDict(
        {
            "x": FieldEmbedding(SCHEMA, 2),
            "y": FieldEmbedding(SCHEMA, {"n0": 1, "a": 2, "b": 3, "n1": 1}),
        }
    )
    tables = set_sparse_gradients(model)
    assert len(tables) == 3  # one fused table, two per-field tables
    assert all(isinstance(m, FieldEmbedding) and m.sparse for m in model.values())
    set_sparse_gradients(model, enabled=False)
    assert not any(isinstance(m, FieldEmbedding) and m.sparse for m in model.values())


PRUNED = SCHEMA.with_kept_rows({"b": 3})


@pytest.mark.parametrize("widths", [4, {"n0": 4, "a": 4, "b": 3, "n1": 2}])
def test_a_pruned_field_stores_only_its_kept_rows_and_embeds_the_rest_as_zeros(widths) -> None:
    emb = FieldEmbedding(PRUNED, widths)
    emb.set_kept("b", [0, 2, 6])
    _set_tables(emb)
    assert emb.table("b").shape[0] == 3 and emb.table("a").shape[0] == 5
    assert emb.pruned_fields == ("b",) and emb.kept_ids("b").tolist() == [0, 2, 6]
    out = emb.flat(BATCH)
    b = emb.table("b").detach()
    width_b = b.shape[1]
    start = 4 + 4  # n0 and a come first
    got = out[:, start : start + width_b]
    # ids 2, 6, 0: rows 1, 2 and 0 of the kept table; a kept id of another field is unaffected
    assert torch.equal(got, torch.stack([b[1], b[2], b[0]]))
    batch = Batch(categorical=torch.tensor([[3, 5]], dtype=torch.int32), numeric=torch.zeros(1, 2),
                  labels=torch.zeros(1))  # fmt: skip
    assert torch.equal(emb.flat(batch)[0, start : start + width_b], torch.zeros(width_b))
    assert torch.equal(emb.flat(batch)[0, 4:8], emb.table("a").detach()[3])


def test_pruned_maps_travel_with_the_weights_and_bad_kept_ids_are_errors() -> None:
    emb = FieldEmbedding(PRUNED, 4)
    emb.set_kept("b", [1, 4, 5])
    copy = FieldEmbedding(PRUNED, 4)
    copy.load_state_dict(emb.state_dict())
    assert copy.kept_ids("b").tolist() == [1, 4, 5]
    assert torch.equal(copy(BATCH), emb(BATCH))
    assert "row_index" not in FieldEmbedding(SCHEMA, 4).state_dict()
    for ids in ([1, 2], [1, 2, 9]):
        with pytest.raises(SlimctrError, match="keeps 3 of 7"):
            emb.set_kept("b", ids)
    with pytest.raises(SlimctrError, match="keeps all its rows"):
        emb.set_kept("a", [0])


def test_a_schema_with_kept_rows_round_trips_and_unpruned_gives_the_data_schema() -> None:
    assert "kept_rows" not in SCHEMA.to_dict()["fields"][1]
    assert Schema.from_dict(PRUNED.to_dict()) == PRUNED != SCHEMA
    assert PRUNED.unpruned() == SCHEMA
    for bad in ({"n0": 1}, {"b": 8}, {"b": 0}):
        with pytest.raises(ValueError, match="kept_rows"):
            SCHEMA.with_kept_rows(bad)


MASKED = SCHEMA.with_kept_entries({"a": 3, "b": 5})


def test_a_masked_table_embeds_masked_entries_as_zeros_that_get_no_gradient() -> None:
    emb = FieldEmbedding(MASKED, 4)
    _set_tables(emb)
    mask_b = torch.zeros(7, 4, dtype=torch.bool)
    mask_b[2, :3] = mask_b[6, 1:3] = True  # 5 entries
    mask_a = torch.zeros(5, 4, dtype=torch.bool)
    mask_a[1, 0] = mask_a[4, 2:] = True  # 3 entries
    emb.set_mask("a", mask_a)
    emb.set_mask("b", mask_b)
    assert emb.masked and int(emb.entry_mask.sum()) == 8
    assert torch.equal(emb.table("b").detach() != 0, mask_b)  # set_mask zeroes the rest
    out = emb(BATCH)  # fields n0, a, b, n1
    expected = emb.table("b").detach()[BATCH.categorical[:, 1].long()]
    assert torch.equal(out[:, 2], expected)
    out.sum().backward()
    assert emb.fused_table is not None and emb.fused_table.weight.grad is not None
    grad = emb.fused_table.weight.grad
    assert torch.all(grad[~emb.entry_mask] == 0) and torch.any(grad[emb.entry_mask] != 0)


def test_a_mask_of_the_wrong_count_or_a_partly_masked_schema_is_an_error() -> None:
    emb = FieldEmbedding(MASKED, 4)
    with pytest.raises(SlimctrError, match="keeps 3 entries"):
        emb.set_mask("a", torch.ones(5, 4, dtype=torch.bool))
    with pytest.raises(SlimctrError, match="every categorical field"):
        FieldEmbedding(SCHEMA.with_kept_entries({"a": 3}), 4)
    with pytest.raises(SlimctrError, match="dense table"):
        FieldEmbedding(SCHEMA, 4).mask("a")
    assert Schema.from_dict(MASKED.to_dict()) == MASKED and MASKED.unpruned() == SCHEMA
    with pytest.raises(ValueError, match="kept_entries"):
        SCHEMA.with_kept_entries({"n0": 1})
