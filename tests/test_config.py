"""Strict configuration: types checked, unknown keys named with a hint, overrides, YAML errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest

from slimctr.config import apply_overrides, dump_yaml, from_dict, load_yaml, to_dict
from slimctr.errors import SlimctrError


@dataclass(frozen=True, kw_only=True)
class LowRank:
    rank: int = 8
    experts: int = 1


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    num_cross_layers: int = 3
    hidden_dims: tuple[int, ...] = (400, 400)
    dropout: float = 0.0
    batch_norm: bool = False
    activation: Literal["relu", "gelu"] = "relu"
    low_rank: LowRank | None = None
    embedding_dims: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if self.num_cross_layers < 0:
            raise ValueError(f"num_cross_layers must be >= 0, got {self.num_cross_layers}")


@dataclass(frozen=True, kw_only=True)
class OtherModelConfig:
    depth: int = 2


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    lr: float = 0.001
    epochs: int = 10
    name: str = "run"
    window: tuple[int, float] = (2, 0.5)
    patience: int | None = 2


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    seed: int = 0
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


@dataclass(frozen=True, kw_only=True)
class Required:
    path: str
    rows: int = 1


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(SlimctrError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- building and round trips ---------------------------------------------------------------------


def test_defaults_and_nested_sections():
    config = from_dict(RunConfig, {"seed": 3, "model": {"hidden_dims": [64, 32]}, "train": {}})
    assert config == RunConfig(seed=3, model=ModelConfig(hidden_dims=(64, 32)))
    assert from_dict(RunConfig, {}) == RunConfig()


def test_round_trip_through_dict_and_yaml(tmp_path):
    config = RunConfig(
        seed=7,
        model=ModelConfig(low_rank=LowRank(rank=4), embedding_dims={"C1": 8}, hidden_dims=(3,)),
        train=TrainConfig(lr=1e-5, name="1e-3", window=(4, 0.25), patience=None),
    )
    data = to_dict(config)
    assert data["model"]["hidden_dims"] == [3] and data["train"]["window"] == [4, 0.25]
    assert data["model"]["low_rank"] == {"rank": 4, "experts": 1}
    assert from_dict(RunConfig, data) == config
    path = tmp_path / "run.yaml"
    path.write_text(dump_yaml(data))
    assert load_yaml(path) == data
    assert from_dict(RunConfig, load_yaml(path)) == config


def test_frozen():
    config = from_dict(RunConfig, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model.num_cross_layers = 1  # type: ignore[misc]


def test_types_choose_the_class_of_a_section():
    config = from_dict(RunConfig, {"model": {"depth": 5}}, types={"model": OtherModelConfig})
    assert config.model == OtherModelConfig(depth=5)
    assert "'model.num_cross_layers'" in error_of(
        from_dict, RunConfig, {"model": {"num_cross_layers": 1}}, types={"model": OtherModelConfig}
    )
    # overrides keep the class the instance has, with no types given again
    assert apply_overrides(config, ["model.depth=1"]).model == OtherModelConfig(depth=1)


def test_required_key():
    assert from_dict(Required, {"path": "x"}) == Required(path="x")
    assert error_of(from_dict, Required, {"rows": 2}) == "missing config key 'path'"


# --- type rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("model", "num_cross_layers", 4, 4),
        ("model", "dropout", 0.5, 0.5),
        ("model", "dropout", 1, 1.0),  # an int is a float
        ("model", "batch_norm", True, True),
        ("model", "activation", "gelu", "gelu"),
        ("model", "hidden_dims", [], ()),
        ("model", "hidden_dims", [1, 2, 3], (1, 2, 3)),
        ("model", "low_rank", None, None),
        ("model", "low_rank", {"rank": 2}, LowRank(rank=2)),
        ("model", "embedding_dims", {"C1": 4, "C2": 8}, {"C1": 4, "C2": 8}),
        ("train", "name", "text", "text"),
        ("train", "window", [3, 1], (3, 1.0)),
        ("train", "patience", None, None),
        ("train", "patience", 5, 5),
    ],
)
def test_accepted_values(section, key, value, expected):
    config = from_dict(RunConfig, {section: {key: value}})
    converted = getattr(getattr(config, section), key)
    assert converted == expected and type(converted) is type(expected)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("model", "num_cross_layers", 2.5, "expects int, got 2.5"),
        ("model", "num_cross_layers", True, "expects int, got true"),
        ("model", "num_cross_layers", "4", "expects int, got '4'"),
        ("model", "dropout", "abc", "expects float, got 'abc'"),
        ("model", "dropout", False, "expects float, got false"),
        ("model", "batch_norm", 1, "expects bool, got 1"),
        ("model", "batch_norm", "yes", "expects bool, got 'yes'"),
        ("model", "activation", "tanh", "expects one of 'relu', 'gelu', got 'tanh'"),
        ("model", "hidden_dims", 400, "expects a list of int, got 400"),
        ("model", "low_rank", 3, "expects a mapping (a config section) or null, got 3"),
        ("model", "embedding_dims", {"C1": "x"}, "'model.embedding_dims.C1' expects int"),
        ("train", "name", 3, "expects str, got 3"),
        ("train", "name", None, "expects str, got null"),
        ("train", "window", [1], "expects a list of 2 values (int, float), got 1 values [1]"),
        ("train", "patience", "x", "expects int or null, got 'x'"),
    ],
)
def test_rejected_values(section, key, value, message):
    error = error_of(from_dict, RunConfig, {section: {key: value}})
    assert f"config key '{section}.{key}" in error
    assert message in error


def test_wrong_list_element_names_its_index():
    error = error_of(from_dict, RunConfig, {"model": {"hidden_dims": [400, "x"]}})
    assert error == "config key 'model.hidden_dims[1]' expects int, got 'x'"


def test_section_must_be_a_mapping():
    assert "section 'model' must be a mapping" in error_of(from_dict, RunConfig, {"model": [1]})
    assert "must be a mapping" in error_of(from_dict, RunConfig, [1])  # type: ignore[arg-type]


def test_post_init_errors_name_the_section():
    error = error_of(from_dict, RunConfig, {"model": {"num_cross_layers": -1}})
    assert error == "model: num_cross_layers must be >= 0, got -1"


def test_unsupported_annotation_is_a_programming_error():
    @dataclass(frozen=True, kw_only=True)
    class Odd:
        values: list[int] = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="unsupported annotation"):
        from_dict(Odd, {"values": [1]})


# --- unknown keys ---------------------------------------------------------------------------------


def test_unknown_key_suggestions():
    assert (
        error_of(from_dict, RunConfig, {"sed": 1})
        == "unknown config key 'sed' (did you mean 'seed'?)"
    )
    assert (
        error_of(from_dict, RunConfig, {"model": {"num_cros_layers": 4}})
        == "unknown config key 'model.num_cros_layers' (did you mean 'model.num_cross_layers'?)"
    )
    error = error_of(from_dict, RunConfig, {"model": {"low_rank": {"rnak": 1}}})
    assert error == "unknown config key 'model.low_rank.rnak' (did you mean 'model.low_rank.rank'?)"


def test_unknown_key_without_close_match_lists_the_valid_keys():
    error = error_of(from_dict, RunConfig, {"train": {"zzz": 1}})
    assert error == (
        "unknown config key 'train.zzz' (valid keys here: lr, epochs, name, window, patience)"
    )


# --- overrides ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "path", "expected"),
    [
        ("model.num_cross_layers=4", "model.num_cross_layers", 4),
        ("train.lr=0.0005", "train.lr", 0.0005),
        ("train.lr=1e-3", "train.lr", 0.001),
        ("train.lr=2", "train.lr", 2.0),
        ("model.hidden_dims=[400,400]", "model.hidden_dims", (400, 400)),
        ("model.low_rank=null", "model.low_rank", None),
        ("model.batch_norm=true", "model.batch_norm", True),
        ("train.name=my run", "train.name", "my run"),
        ("train.name=no", "train.name", "no"),  # text, not a YAML 1.1 boolean
        ("train.name=2024-01-01", "train.name", "2024-01-01"),
        ("train.name='4'", "train.name", "4"),
        ("train.name=a=b", "train.name", "a=b"),
        (" seed = 5 ", "seed", 5),
        ("model.low_rank.rank=2", "model.low_rank", LowRank(rank=2)),  # creates the section
        ("model.low_rank={rank: 3}", "model.low_rank", LowRank(rank=3)),
        ("model.embedding_dims.C1=4", "model.embedding_dims", {"C1": 4}),
    ],
)
def test_overrides(override, path, expected):
    config = apply_overrides(RunConfig(), [override])
    value = config
    for part in path.split("."):
        value = getattr(value, part)
    assert value == expected and type(value) is type(expected)


def test_overrides_apply_in_order_and_leave_the_original_alone():
    original = RunConfig()
    config = apply_overrides(original, ["seed=1", "seed=2", "model.dropout=0.5"])
    assert (config.seed, config.model.dropout) == (2, 0.5)
    assert original == RunConfig()
    assert apply_overrides(original, []) == original


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.num_cros_layers=4", "unknown config key 'model.num_cros_layers' (did you mean "),
        ("modle.dropout=0.1", "unknown config key 'modle' (did you mean 'model'?)"),
        ("train.lr=abc", "config key 'train.lr' expects float, got 'abc'"),
        ("model.batch_norm=1", "config key 'model.batch_norm' expects bool, got 1"),
        ("model.num_cross_layers=-1", "model: num_cross_layers must be >= 0"),
        ("train.lr.x=1", "config key 'train.lr' is a value, not a section"),
        ("model.num_cross_layers", "malformed override 'model.num_cross_layers' (expected key=v"),
        ("=4", "malformed override '=4'"),
        ("model.hidden_dims=[400,", "invalid value in override 'model.hidden_dims=[400,'"),
    ],
)
def test_bad_overrides(override, message):
    assert message in error_of(apply_overrides, RunConfig(), [override])


# --- YAML files -----------------------------------------------------------------------------------


def test_load_yaml_scalars(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: 1e-3\nb: no\nc: true\nd: ~\ne: 017\nf: .inf\ng: 2024-01-01\nh: [1, 2.5]\n")
    data = load_yaml(path)
    assert data == {
        "a": 0.001, "b": "no", "c": True, "d": None, "e": "017",
        "f": float("inf"), "g": "2024-01-01", "h": [1, 2.5],
    }  # fmt: skip


def test_load_yaml_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    assert load_yaml(path) == {}


def test_load_yaml_errors(tmp_path):
    missing = tmp_path / "missing.yaml"
    assert error_of(load_yaml, missing) == f"config file not found: {missing}"
    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: 1\nmodel:\n  hidden_dims: [400, 400\n  dropout: 0.1\n")
    error = error_of(load_yaml, broken)
    assert error.startswith(f"invalid YAML in {broken}, line ")
    twice = tmp_path / "twice.yaml"
    twice.write_text("seed: 1\ntrain:\n  lr: 0.1\n  lr: 0.2\n")
    assert error_of(load_yaml, twice).startswith(f"invalid YAML in {twice}, line 4, column 3: ")
    assert "duplicate key 'lr'" in error_of(load_yaml, twice)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    assert "must hold a mapping" in error_of(load_yaml, listed)
    assert "cannot read config file" in error_of(load_yaml, tmp_path)


def test_yaml_file_errors_reach_the_user_as_one_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  num_cros_layers: 4\n")
    error = error_of(from_dict, RunConfig, load_yaml(path))
    assert (
        error
        == "unknown config key 'model.num_cros_layers' (did you mean 'model.num_cross_layers'?)"
    )
