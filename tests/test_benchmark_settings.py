"""The studies' settings: every override a study passes is a real config key, and runs that are
meant to be shared between the Frappe table and the depth study have the same key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import defaults
import depth
import fdo
import frappe
from runlog import PINNED, RunLog, pinned, run_folder, run_key, shipped_overrides

from slimctr.models import MODELS
from slimctr.runconfig import resolve_config
from slimctr.shipped import shipped_configs


@pytest.mark.parametrize("model", sorted(n for n, e in MODELS.items() if not e.from_search))
def test_every_table_setting_is_a_key_of_the_model_and_set_once(model):
    overrides = frappe.overrides_for(model)
    config = resolve_config(model, overrides=overrides, seed=0)  # unknown keys raise
    keys = [o.split("=")[0] for o in overrides]
    assert len(keys) == len(set(keys))
    assert (config.train.epochs, config.train.plateau_patience) == (100, 0)  # BARS schedule
    keyed = resolve_config(model, overrides=[*pinned(model), *overrides], seed=0)
    assert keyed == resolve_config(model, config_file="frappe_x1", overrides=PINNED, seed=0)


@pytest.mark.parametrize("name", sorted(shipped_configs()))
def test_shipped_numbers_are_the_means_of_the_logged_runs(name):
    """What `slimctr configs` says a model reached is what its logged runs reached."""
    shipped = shipped_configs()[name]
    log = RunLog(frappe.LOG)
    assert shipped.test_auc, "every shipped config reports what it reached"
    for model, reached in shipped.test_auc.items():
        overrides = shipped_overrides(name, model)
        runs = [r for s in range(reached["seeds"]) if (r := log.get(model, s, overrides))]
        assert len(runs) == reached["seeds"], model
        mean = sum(r["test"]["auc"] for r in runs) / len(runs)
        assert mean == pytest.approx(reached["mean"], abs=5e-5), model


def test_bars_settings_win_over_the_common_ones():
    config = resolve_config("wide_deep", overrides=frappe.overrides_for("wide_deep"), seed=0)
    assert config.train.embedding_l2 == 0.1  # BARS's, not the common 0.05
    assert config.model.dropout == 0.6


def test_extra_settings_replace_the_tables_own_and_keep_the_rest():
    table = frappe.overrides_for("gdcn_p")
    extra = frappe.with_settings(table, ["model.dropout=0.4", "model.batch_norm=false"])
    config = resolve_config("gdcn_p", overrides=extra, seed=0)
    assert (config.model.dropout, config.model.batch_norm) == (0.4, False)
    assert set(table) < set(extra) and len(extra) == len(table) + 2
    again = frappe.with_settings(extra, ["model.dropout=0.2"])
    assert "model.dropout=0.4" not in again and "model.dropout=0.2" in again


@pytest.mark.parametrize("model", depth.MODELS)
def test_depth_study_shares_the_table_run_at_the_table_depth(model):
    """(GCN's row has changed since the depth study ran; the study keeps GCN's old settings.)"""
    table = frappe.GCN_BEFORE if model == "gcn" else frappe.overrides_for(model)
    table_depth = resolve_config(model, overrides=table, seed=0).model.num_cross_layers
    for layers in (1, 2, 3, 4, 6, 8):
        overrides = depth.overrides("frappe", model, layers)
        config = resolve_config(model, overrides=overrides, seed=0)
        assert config.model.num_cross_layers == layers
        shared = run_key(model, 0, overrides) == run_key(model, 0, table)
        assert shared == (layers == table_depth)


def test_long_run_keys_get_distinct_folders(tmp_path):
    long = [f"model.key_{k}=value" for k in range(20)]
    first = run_folder(tmp_path, "dcnv2", 0, [*long, "train.epochs=1"])
    second = run_folder(tmp_path, "dcnv2", 0, [*long, "train.epochs=2"])
    assert first != second and len(first.name) <= 200 and len(second.name) <= 200


@pytest.mark.parametrize("model", ["gdcn_p", "dcnv2"])
def test_fdo_frappe_sources_are_the_table_settings_on_bars_schedule(model):
    overrides = fdo.source_overrides("frappe", model)
    config = resolve_config(model, overrides=overrides, seed=0)
    table = resolve_config(model, overrides=frappe.overrides_for(model), seed=0)
    assert config.model == table.model
    assert config.train.embedding_l2 == table.train.embedding_l2
    assert (config.train.epochs, config.train.plateau_patience) == (100, 0)
    assert config.train.early_stopping_patience == 2


@pytest.mark.parametrize("model", defaults.MODELS)
def test_the_defaults_study_keys_name_todays_defaults(model):
    """The defaults study names the model defaults it chose, so its logged keys keep meaning
    what they meant; they must be the package's defaults (with the logs' fixed precision)."""
    keyed = resolve_config(model, overrides=[*pinned(model), *defaults.defaults_for(model)])
    assert keyed == resolve_config(model, overrides=["train.precision=fp32"])
