"""Shipped configs: each one loads for each of its models, and --config finds them by name."""

from __future__ import annotations

import pytest

from slimctr.cli import main
from slimctr.config import to_dict
from slimctr.errors import SlimctrError
from slimctr.runconfig import resolve_config
from slimctr.shipped import config_path, shipped_configs

SHIPPED = [(s.name, m) for s in shipped_configs().values() for m in s.models]


@pytest.mark.parametrize(("name", "model"), SHIPPED)
def test_every_shipped_config_resolves_with_the_paper_protocol(name, model):
    config = resolve_config(model, config_file=name, seed=0)  # unknown keys would raise
    assert config.model_name == model
    # The shipped settings were found with the paper preset; they keep it whatever the default.
    assert config.train.preset == "paper"


def test_the_index_lists_only_shipped_models():
    for shipped in shipped_configs().values():
        assert shipped.models
        assert set(shipped.test_auc) <= set(shipped.models)


def test_a_file_of_that_name_wins_over_the_shipped_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "frappe_x1").write_text("model_name: dcnv2\ntrain:\n  epochs: 7\n")
    assert config_path("frappe_x1", "dcnv2").resolve() == tmp_path / "frappe_x1"
    assert resolve_config("dcnv2", config_file="frappe_x1").train.epochs == 7


def test_an_unknown_name_or_model_is_a_clear_error():
    with pytest.raises(SlimctrError, match=r"config file not found: nope \(nor a shipped"):
        resolve_config("dcnv2", config_file="nope")
    with pytest.raises(SlimctrError, match="has no settings for model 'lr'"):
        resolve_config("lr", config_file="frappe_x1_formula_widths")


def test_overrides_win_over_a_shipped_config():
    config = resolve_config("dcnv2", config_file="frappe_x1", overrides=["model.dropout=0.1"])
    assert config.model.dropout == 0.1
    assert to_dict(config)["model"]["num_cross_layers"] == 4  # the shipped value stays


def test_configs_command_lists_names_models_and_auc(capsys):
    assert main(["configs"]) == 0
    text = capsys.readouterr().out
    assert "frappe_x1:" in text and "gdcn_p" in text and "test AUC 0.98" in text
