"""The plan every search leaves: kept rows, honest sizes (spec 1.4), the JSON and its sidecar."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from slimctr.errors import SlimctrError
from slimctr.schema import FieldSpec, Schema
from slimctr.search.plan import Plan, kept_ids_path


def _pruned() -> Plan:
    """Field a keeps 3 of its 10 rows at width 4; b keeps all 5 at width 2; n is numeric."""
    return Plan(
        method="test",
        settings={"strength": 1e-8, "rounds": 3, "mode": "field"},
        widths={"n": 1, "a": 4, "b": 2},
        field_sizes={"n": 1, "a": 10, "b": 5},
        kept={"a": np.array([0, 3, 7])},
    )


def test_sizes_count_kept_rows_times_widths_and_the_index_maps():
    plan = _pruned()
    assert plan.kept_rows == {"n": 1, "a": 3, "b": 5}
    assert plan.embedding_params == 1 * 1 + 3 * 4 + 5 * 2
    assert plan.index_bytes == 2  # a bit per id of the one pruned field (10 ids: 2 bytes)
    assert plan.embedding_bytes == 4 * plan.embedding_params + 2
    assert plan.feature_ratio == pytest.approx(9 / 16)
    assert plan.d_bar == pytest.approx((1 + 40 + 10) / 16) and plan.k_bar == pytest.approx(7 / 3)
    whole = Plan(method="test", widths=plan.widths, field_sizes=plan.field_sizes)
    assert whole.embedding_params == 1 + 40 + 10 and whole.index_bytes == 0
    assert whole.feature_ratio == 1.0 and whole.embedding_params > plan.embedding_params


def test_a_plan_with_kept_rows_round_trips_through_json_and_its_sidecar(tmp_path):
    plan = _pruned()
    plan.save(tmp_path / "plan.json")
    data = json.loads((tmp_path / "plan.json").read_text())
    assert data["kept_rows"] == {"n": 1, "a": 3, "b": 5} and "kept" not in data
    assert data["kept_ids"]["file"] == kept_ids_path(tmp_path / "plan.json").name
    loaded = Plan.load(tmp_path / "plan.json")
    assert loaded.same_as(plan) and loaded.kept["a"].dtype == np.int64
    with pytest.raises(SlimctrError, match=r"kept_rows .* disagrees"):  # the ids are beside it
        Plan.from_dict(data)


def test_a_damaged_or_missing_sidecar_is_a_one_line_error(tmp_path):
    _pruned().save(tmp_path / "plan.json")
    sidecar = kept_ids_path(tmp_path / "plan.json")
    sidecar.write_bytes(sidecar.read_bytes()[:-1] + b"x")
    with pytest.raises(SlimctrError, match="is damaged: its checksum differs") as caught:
        Plan.load(tmp_path / "plan.json")
    assert "\n" not in str(caught.value)
    sidecar.unlink()
    with pytest.raises(SlimctrError, match=r"plan file not found: .*plan\.kept\.safetensors"):
        Plan.load(tmp_path / "plan.json")


@pytest.mark.parametrize(
    ("kept", "fragment"),
    [
        ({"a": np.array([3, 1])}, "increasing ids in \\[0, 10\\)"),
        ({"a": np.array([1, 1])}, "increasing ids"),
        ({"a": np.array([0, 10])}, "increasing ids"),
        ({"a": np.array([-1, 2])}, "increasing ids"),
        ({"a": np.array([], dtype=np.int64)}, "non-empty list of ids"),
        ({"a": np.array([0.5])}, "non-empty list of ids"),
        ({"z": np.array([0])}, "unknown z"),
    ],
)
def test_kept_rows_must_be_increasing_ids_of_the_field(kept, fragment):
    with pytest.raises(SlimctrError, match=fragment):
        Plan(method="test", widths={"a": 2}, field_sizes={"a": 10}, kept=kept)


def test_kept_ids_written_into_the_json_are_refused():
    data = _pruned().to_dict()
    with pytest.raises(SlimctrError, match="stored beside it"):
        Plan.from_dict({**data, "kept": {"a": [0, 3, 7]}})
    with pytest.raises(SlimctrError, match="embedding_params 1 disagrees"):
        Plan.from_dict({**data, "embedding_params": 1}, _pruned().kept)


def test_pruned_rows_fit_only_their_own_table_size():
    def schema(size: int) -> Schema:
        return Schema(
            label="label",
            fields=(
                FieldSpec(name="n", kind="numeric"),
                FieldSpec(name="a", kind="categorical", vocab_size=size),
                FieldSpec(name="b", kind="categorical", vocab_size=7),
            ),
        )

    plan = _pruned()
    plan.check_schema(schema(10))  # b's size differs: its widths still fit
    with pytest.raises(SlimctrError, match="field 'a' has 12 rows in the data and 10 in the plan"):
        plan.check_schema(schema(12))


def _masked() -> Plan:
    """Fields a (10 rows) and b (5 rows) at width 4, masked to 6 and 2 entries; n numeric."""
    mask_a, mask_b = np.zeros((10, 4), dtype=bool), np.zeros((5, 4), dtype=bool)
    mask_a[[0, 3, 7], :2] = True
    mask_b[4, 1:3] = True
    return Plan(
        method="test",
        widths={"n": 4, "a": 4, "b": 4},
        field_sizes={"n": 1, "a": 10, "b": 5},
        masks={"a": mask_a, "b": mask_b},
    )


def test_a_masked_plan_counts_kept_entries_and_a_bit_per_entry_and_round_trips(tmp_path):
    plan = _masked()
    assert plan.kept_entries == {"a": 6, "b": 2} and plan.kept_rows == {"n": 1, "a": 10, "b": 5}
    assert plan.embedding_params == 4 + 6 + 2
    assert plan.index_bytes == math.ceil(60 / 8) and plan.feature_ratio == 1.0
    plan.save(tmp_path / "plan.json")
    loaded = Plan.load(tmp_path / "plan.json")
    assert loaded.same_as(plan) and loaded.masks["a"].dtype == np.bool_
    other = _masked()
    other.masks["b"][0, 0] = True
    assert not other.same_as(plan)


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"masks": {"a": np.ones((9, 4), dtype=bool)}}, r"boolean \(10, 4\)"),
        ({"masks": {"a": np.ones((10, 4), dtype=np.uint8)}}, "boolean"),
        ({"kept": {"b": np.array([1, 2])}}, "not both"),
    ],
)
def test_masks_of_the_wrong_shape_or_beside_kept_rows_are_refused(change, fragment):
    plan = _masked()
    fields = {"method": "test", "widths": plan.widths, "field_sizes": plan.field_sizes}
    with pytest.raises(SlimctrError, match=fragment):
        Plan(**fields, **{"masks": plan.masks, **change})


def _grouped(**change) -> Plan:
    """Two groups over fields n, a (10 rows), b (5 rows), behind a router of width 2 that
    keeps 4 of a's rows."""
    settings = {
        "method": "test",
        "widths": {"n": 2, "a": 4, "b": 2},
        "field_sizes": {"n": 1, "a": 10, "b": 5},
        "groups": ({"n": 2, "a": 4, "b": 2}, {"n": 1, "a": 2, "b": 1}),
        "router": {"router_dim": 2},
        "router_rows": {"a": 4},
    }
    return Plan(**(settings | change))


def test_a_grouped_plan_counts_every_group_and_the_router_rows_it_keeps(tmp_path):
    plan = _grouped()
    groups = (2 + 40 + 10) + (1 + 20 + 5)
    assert plan.embedding_params == groups + 2 * (1 + 4 + 5)
    plan.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json").same_as(plan)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"router_rows": {"a": 11}}, "router_rows of 'a' exceed the field's rows"),
        ({"router_rows": {"a": 0}}, "router_rows of 'a' must be an int >= 1"),
        ({"router_rows": {"c": 3}}, "router_rows name an unknown field: c"),
        ({"groups": (), "router": None}, "only a plan with groups has router_rows"),
    ],
)
def test_router_rows_fit_the_fields_of_a_grouped_plan(change, fragment):
    with pytest.raises(SlimctrError, match=fragment):
        _grouped(**change)
