"""One suite for every registered model: whatever is in MODELS is tested here.

A new model needs a golden entry (run ``.venv/bin/python tests/models/make_golden.py``) and an
invalid value in ``INVALID`` for each of its config keys.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from slimctr.errors import SlimctrError
from slimctr.models import MODELS
from slimctr.nn.embedding import set_sparse_gradients
from tests.models.make_golden import GOLDEN_PATH, build, golden_logits, tiny_batch, tiny_schema

NAMES = sorted(MODELS)

# One invalid value per config key; each must raise a SlimctrError naming "model.<key>".
INVALID: dict[str, object] = {
    "backbone": "routed",
    "experts": (),
    "router_dim": 0,
    "router_hidden": 0,
    "router_blocks": 0,
    "router_rows": ["c0"],
    "embedding_dim": 0,
    "embedding_align_dim": 0,
    "embedding_init_std": -1.0,
    "hidden_dims": (400, 0),
    "dropout": 1.0,
    "batch_norm": "yes",
    "structure": "diagonal",
    "num_cross_layers": 0,
    "low_rank": 0,
    "cin_layer_sizes": (16, 0),
    "attention_layers": 0,
    "num_heads": 0,
    "attention_dim": 0,
    "use_residual": "yes",
    "stream1_dims": (),
    "stream2_dims": (400, 0),
    "feature_gating": 1,
    "reduction_ratio": 0,
    "num_blocks": 0,
    "block_dim": 0,
    "excitation_activation": "tanh",
    "linear_type": "scalar",
    "block_dropout": -0.1,
    "embedding_norm": "yes",
    "identity_residual": 1,
    "scale_scores": "no",
    "attention_dropout": 1.0,
    "layer_norm": "yes",
    "gate1_context": "c0",
    "gate2_context": ["c0", "c0"],
    "gate_hidden_dims": (0,),
}


def _loss(model: nn.Module) -> torch.Tensor:
    batch = tiny_batch()
    return nn.functional.binary_cross_entropy_with_logits(model(batch), batch.labels)


@pytest.mark.parametrize("name", NAMES)
def test_logits_shape_and_dtype(name: str) -> None:
    logits = build(name)(tiny_batch())
    assert logits.shape == (8,) and logits.dtype == torch.float32


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("name", NAMES)
def test_every_trainable_parameter_gets_a_finite_nonzero_gradient(name: str, sparse: bool) -> None:
    model = build(name).train()
    sparse_tables = {id(t) for t in set_sparse_gradients(model, sparse)}
    _loss(model).backward()
    for parameter_name, parameter in model.named_parameters():
        if not parameter.requires_grad:  # a routed model's router: found by its search
            continue
        grad = parameter.grad
        assert grad is not None, f"{name}: {parameter_name} got no gradient"
        assert grad.is_sparse == (sparse and id(parameter) in sparse_tables), parameter_name
        values = grad.coalesce().values() if grad.is_sparse else grad
        assert torch.isfinite(values).all(), f"{name}: {parameter_name} gradient not finite"
        assert values.abs().sum() > 0, f"{name}: {parameter_name} gradient is all zero"


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_same_model_and_output(name: str) -> None:
    first, second, other = build(name).eval(), build(name).eval(), build(name, seed=1).eval()
    assert torch.equal(first(tiny_batch()), second(tiny_batch()))
    assert not torch.equal(first(tiny_batch()), other(tiny_batch()))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name: str) -> None:
    model = build(name).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    _loss(model).backward()
    optimizer.step()  # move away from the initial values, and update BatchNorm statistics
    fresh = build(name, seed=1)
    fresh.load_state_dict(model.state_dict())
    model.eval(), fresh.eval()
    assert torch.equal(model(tiny_batch()), fresh(tiny_batch()))


@pytest.mark.parametrize("name", NAMES)
def test_config_is_frozen_keyword_only_and_validated(name: str) -> None:
    config_class = MODELS[name].config
    config = config_class()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.embedding_dim = 8
    keys = [f.name for f in dataclasses.fields(config_class)]
    assert keys, f"{name}: config has no keys"
    with pytest.raises(TypeError):
        config_class(*(getattr(config, key) for key in keys))  # keyword-only
    missing = [key for key in keys if key not in INVALID]
    assert not missing, f"{name}: add an invalid value for {missing} to INVALID"
    for key in keys:
        with pytest.raises(SlimctrError, match=rf"^model\.{key} "):
            config_class(**{key: INVALID[key]})


@pytest.mark.parametrize("name", NAMES)
def test_golden_logits(name: str) -> None:
    golden = json.loads(GOLDEN_PATH.read_text())
    assert name in golden, f"no golden logits for {name!r}: run tests/models/make_golden.py"
    actual = golden_logits(name)
    for key in ("init", "perturbed"):
        torch.testing.assert_close(
            torch.tensor(actual[key]), torch.tensor(golden[name][key]), atol=1e-5, rtol=0
        )


def test_golden_file_lists_exactly_the_registered_models() -> None:
    assert sorted(json.loads(GOLDEN_PATH.read_text())) == NAMES


def test_registry_entries_describe_themselves() -> None:
    schema = tiny_schema()
    for name, entry in MODELS.items():
        assert entry.description and "\n" not in entry.description, name
        assert isinstance(entry.model(schema, entry.config()), nn.Module)
