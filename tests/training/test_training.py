"""Training end to end on a small synthetic store: run directory, resume, protocol, errors."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torch import nn

from slimctr.data.datasets import locate
from slimctr.data.loader import BatchLoader
from slimctr.data.prepare import prepare
from slimctr.data.synthetic import SyntheticConfig, write_synthetic
from slimctr.errors import SlimctrError
from slimctr.runconfig import build_model, resolve_config
from slimctr.rundir import RunDir, RunState
from slimctr.training import run
from slimctr.training.callbacks import Callback
from slimctr.training.trainer import TrainConfig, Trainer, _add_l2, clip_grad_norm

FAST = [
    "model.hidden_dims=[32,32]",
    "model.embedding_dim=4",
    "train.batch_size=512",
    "train.epochs=3",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    source = tmp / "synthetic.parquet"
    write_synthetic(SyntheticConfig(rows=12_000, seed=1), source)
    located = locate("synthetic", [source])
    built, _ = prepare(located.sources, tmp / "data", located.options, attach=located.attach)
    return built


def _config(model="dcnv2", extra=()):
    return resolve_config(model, overrides=[*FAST, *extra], threads=1)


def test_run_directory_holds_everything(store, tmp_path):
    metrics = run.train(store.path, tmp_path / "r", _config())
    folder = RunDir(tmp_path / "r")
    assert folder.state is RunState.FINISHED
    names = {p.name for p in (tmp_path / "r").iterdir()}
    assert names == {
        "run.json",
        "config.yaml",
        "schema.json",
        "data.json",
        "versions.json",
        "history.json",
        "metrics.json",
        "bundle",
    }  # no checkpoint once finished, no stray temporary file
    saved = folder.metrics()
    assert saved == json.loads(json.dumps(metrics))
    for key in (
        "model",
        "valid",
        "test",
        "best_epoch",
        "num_params",
        "embedding_params",
        "embedding_bytes",
        "train_samples_per_s",
        "seed",
    ):
        assert key in saved
    assert (
        0.5 < saved["test"]["auc"] <= 1
        and saved["embedding_bytes"] == 4 * saved["embedding_params"]
    )
    history = folder.history()
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[saved["best_epoch"] - 1]["valid"] == saved["valid"]
    assert "git_revision" in folder.versions()
    assert folder.config() == _config() and folder.schema() == store.schema


def test_same_seed_same_result_and_evaluate_agrees(store, tmp_path):
    first = run.train(store.path, tmp_path / "a", _config())
    second = run.train(store.path, tmp_path / "b", _config())
    assert first["test"] == second["test"]
    assert run.evaluate(tmp_path / "a", split="test") == first["test"]


class _Interrupt(Callback):
    """Raises KeyboardInterrupt at ``(epoch, step)``, as Ctrl-C would."""

    def __init__(self, epoch: int, step: int | None = None) -> None:
        self.epoch, self.step, self.done = epoch, step, 0

    def on_epoch_start(self, trainer):
        self.done = 0

    def on_step_end(self, trainer, batch, loss):
        self.done += 1
        step = len(trainer.loader) // 2 if self.step is None else self.step
        if trainer.epoch == self.epoch and self.done == step:
            raise KeyboardInterrupt


def test_resume_after_an_interruption_mid_epoch_ends_identically(store, tmp_path):
    config = _config()
    whole = run.train(store.path, tmp_path / "whole", config)
    with pytest.raises(KeyboardInterrupt):
        run.train(store.path, tmp_path / "cut", config, progress=_Interrupt(epoch=1))
    assert RunDir(tmp_path / "cut").state is RunState.STARTED
    with pytest.raises(SlimctrError, match="continue it with --resume"):
        run.train(store.path, tmp_path / "cut", config)
    resumed = run.train(store.path, tmp_path / "cut", config, resume=True)
    assert resumed["test"] == whole["test"] and resumed["valid"] == whole["valid"]
    assert resumed["best_epoch"] == whole["best_epoch"]
    # a finished run is reused by --resume, and refused without it
    assert run.train(store.path, tmp_path / "cut", config, resume=True) == resumed
    with pytest.raises(SlimctrError, match="already holds a finished run"):
        run.train(store.path, tmp_path / "cut", config)


def test_resume_accepts_keys_added_since_at_their_defaults_and_refuses_real_changes(
    store, tmp_path
):
    config = _config(extra=["train.epochs=2"])
    with pytest.raises(KeyboardInterrupt):
        run.train(store.path, tmp_path / "r", config, progress=_Interrupt(epoch=1, step=1))
    # a run started before train.min_lr existed: its config.yaml (and the checksum that older
    # slimctr recorded for it) has no such key
    saved = tmp_path / "r" / "config.yaml"
    text = "".join(line for line in saved.read_text().splitlines(True) if "min_lr" not in line)
    saved.write_text(text)
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    record["files"]["config.yaml"] = hashlib.sha256(text.encode()).hexdigest()
    (tmp_path / "r" / "run.json").write_text(json.dumps(record))
    other = _config(extra=["train.epochs=2", "train.lr=0.01"])
    with pytest.raises(SlimctrError, match="was started with another configuration"):
        run.train(store.path, tmp_path / "r", other, resume=True)
    assert run.train(store.path, tmp_path / "r", config, resume=True)["best_epoch"] >= 1


def test_early_stopping_stops_after_patience(store, tmp_path):
    # with a learning rate far too small to move, LR never improves after epoch 1
    config = resolve_config(
        "lr",
        overrides=["train.lr=1e-12", "train.epochs=20", "train.early_stopping_patience=2"],
        threads=1,
    )
    metrics = run.train(store.path, tmp_path / "r", config)
    history = RunDir(tmp_path / "r").history()
    assert metrics["best_epoch"] == 1 and len(history) == 3


def test_plateau_divides_the_learning_rate(store, tmp_path):
    # LR with a learning rate far too small to move: no improvement after epoch 1
    config = resolve_config(
        "lr",
        overrides=[
            "train.lr=1e-12",
            "train.epochs=5",
            "train.plateau_patience=1",
            "train.early_stopping_patience=10",
            "train.plateau_factor=0.5",
        ],
        threads=1,
    )
    run.train(store.path, tmp_path / "r", config)
    history = RunDir(tmp_path / "r").history()
    assert [h["lr"] for h in history] == pytest.approx([1e-12, 1e-12, 1e-12, 5e-13, 5e-13])


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        # any rise is an improvement, however small: the rate is cut after the first flat epoch
        (0.0, [1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-4]),
        # with a margin, the rises of 1e-5 do not count: cut after every epoch but the first
        (1e-4, [1e-3, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7]),
    ],
)
def test_plateau_counts_any_rise_unless_given_a_threshold(
    store, tmp_path, monkeypatch, threshold, expected
):
    # validation AUC scripted per epoch: a start, three rises of 1e-5, then two flat epochs
    scripted = iter([0.9, 0.90001, 0.90002, 0.90003, 0.90003, 0.90003])
    monkeypatch.setattr(Trainer, "_train_epoch", lambda self: 0.5)
    monkeypatch.setattr(
        Trainer, "evaluate", lambda self, split: {"auc": next(scripted), "logloss": 0.5}
    )
    config = resolve_config(
        "lr",
        overrides=[
            "train.epochs=6",
            "train.plateau_patience=0",
            "train.early_stopping_patience=10",
            f"train.plateau_threshold={threshold}",
        ],
        threads=1,
    )
    model = build_model(config, store.schema)
    trainer = Trainer(model, store, config.train, seed=0)
    trainer.fit()
    # the rate each epoch trained with: the schedule acts after an epoch's score, on the next
    assert [h["lr"] for h in trainer.history] == pytest.approx(expected)
    assert (
        trainer.best["epoch"] == 3
    )  # the 4th (0-based 3): any rise counts, whatever the threshold


def test_a_negative_plateau_threshold_is_refused():
    with pytest.raises(SlimctrError, match=r"^train.plateau_threshold must be >= 0, got -1e-06$"):
        resolve_config("lr", overrides=["train.plateau_threshold=-1e-6"])


def test_min_lr_floors_the_plateau_cuts(store, tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "_train_epoch", lambda self: 0.5)
    monkeypatch.setattr(Trainer, "evaluate", lambda self, split: {"auc": 0.9, "logloss": 0.5})
    overrides = ["train.epochs=6", "train.plateau_patience=0", "train.early_stopping_patience=10"]
    config = resolve_config("lr", overrides=[*overrides, "train.min_lr=1e-5"], threads=1)
    trainer = Trainer(build_model(config, store.schema), store, config.train, seed=0)
    trainer.fit()
    # AUC never rises after the first epoch: each later one cuts the rate tenfold, down to the
    # floor and no further
    expected = [1e-3, 1e-3, 1e-4, 1e-5, 1e-5, 1e-5]
    assert [h["lr"] for h in trainer.history] == pytest.approx(expected)


def test_grad_clip_norm_bounds_the_gradient_norm(store, tmp_path):
    def gradient_norm(extra):
        config = resolve_config("dcnv2", overrides=list(extra), threads=1)
        model = build_model(config, store.schema)
        trainer = Trainer(model, store, config.train, seed=0)
        trainer.step(next(iter(trainer.loader)))
        return torch.stack([p.grad.norm() for p in model.parameters()]).norm().item()

    assert gradient_norm([]) > 1e-3  # so clipping at 1e-3 has something to do
    assert gradient_norm(["train.grad_clip_norm=1e-3"]) == pytest.approx(1e-3, rel=1e-4)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.min_lr=-1", r"^train.min_lr must be >= 0, got -1.0$"),
        ("train.grad_clip_norm=0", r"^train.grad_clip_norm must be > 0, got 0.0$"),
    ],
)
def test_bad_min_lr_and_grad_clip_norm_are_refused(override, message):
    with pytest.raises(SlimctrError, match=message):
        resolve_config("lr", overrides=[override])


def test_clip_grad_norm_reads_sparse_gradients_like_their_dense_form():
    torch.manual_seed(0)
    sparse, dense = nn.Embedding(6, 3, sparse=True), nn.Embedding(6, 3)
    dense.load_state_dict(sparse.state_dict())
    ids = torch.tensor([1, 4, 4, 2, 1])  # duplicates: the sparse gradient holds 5 entries
    for table in (sparse, dense):
        (table(ids) * torch.arange(15.0).view(5, 3)).sum().backward()
    norms = [clip_grad_norm(t.parameters(), 2.0) for t in (sparse, dense)]
    assert norms[0] == pytest.approx(norms[1]) and norms[0] > 2
    assert sparse.weight.grad is not None and dense.weight.grad is not None
    torch.testing.assert_close(sparse.weight.grad.to_dense(), dense.weight.grad)
    assert float(dense.weight.grad.norm()) == pytest.approx(2.0, rel=1e-5)


def test_lazy_adam_moves_the_touched_rows_as_dense_adam_and_leaves_the_others(store):
    """On the first step both optimisers see the same gradient, L2 included, on every touched
    row; dense Adam also decays the untouched rows (their L2 gradient), lazy Adam leaves them.
    In fp32: on a CPU with bf16 units ``auto`` would round the two forward passes apart."""
    batch = next(iter(BatchLoader(store, "train", batch_size=64)))
    models = {}
    for optimizer in ("lazy_adam", "adam"):
        extra = [f"train.embedding_optimizer={optimizer}", "train.embedding_l2=0.1"]
        config = _config(extra=[*extra, "train.precision=fp32"])
        model = build_model(config, store.schema)
        Trainer(model, store, config.train, seed=0).step(batch)
        models[optimizer] = model
    lazy, dense = (models[o].state_dict() for o in ("lazy_adam", "adam"))
    table = "embedding.fused_table.weight"
    touched = torch.zeros(len(lazy[table]), dtype=torch.bool)
    touched[(batch.categorical.long() + models["adam"].embedding.offsets).unique()] = True
    start = build_model(_config(), store.schema).state_dict()[table]  # the seed's initial table
    assert torch.equal(lazy[table][~touched], start[~touched])
    assert not torch.isclose(dense[table][~touched], start[~touched]).any()
    # SparseAdam adds eps after the bias correction (on step one an effective eps of
    # 1e-8 / sqrt(1 - 0.999)), Adam before it: where a gradient is near 1e-5 the lazy step is a
    # few percent of the learning rate shorter, elsewhere within 1% of it.
    gap = (lazy[table][touched] - dense[table][touched]).abs() / config.train.lr
    assert gap.max() < 0.05 and (gap < 0.01).float().mean() > 0.99
    for name in lazy:
        if name != table:
            torch.testing.assert_close(lazy[name], dense[name])


def test_the_l2_of_lazy_adam_counts_each_touched_row_once():
    table = nn.Embedding(5, 2, sparse=True)
    table(torch.tensor([3, 3, 3, 0])).sum().backward()
    _add_l2([table.weight], 0.5)
    grad = table.weight.grad
    assert grad is not None and grad.is_sparse
    expected = torch.zeros(5, 2)
    expected[3], expected[0] = 3 + 0.5 * table.weight[3], 1 + 0.5 * table.weight[0]
    torch.testing.assert_close(grad.to_dense(), expected.detach())


def test_refuses_to_overwrite_a_run_and_a_foreign_schema(store, tmp_path):
    run.train(store.path, tmp_path / "r", _config(extra=["train.epochs=1"]))
    with pytest.raises(SlimctrError, match="already holds a finished run"):
        run.train(store.path, tmp_path / "r", _config(extra=["train.epochs=1"]))
    other_source = tmp_path / "other.parquet"
    write_synthetic(
        SyntheticConfig(
            rows=3_000,
            num_categorical=5,
            num_numeric=2,
            num_important=2,
            num_pairs=1,
            num_triples=0,
            seed=2,
        ),
        other_source,
    )
    located = locate("synthetic", [other_source])
    other, _ = prepare(located.sources, tmp_path / "other", located.options)
    with pytest.raises(SlimctrError, match="is not encoded like the data"):
        run.evaluate(tmp_path / "r", data_dir=other.path)


def test_unknown_model_and_mistyped_key_suggest_the_closest(store):
    with pytest.raises(SlimctrError, match="did you mean 'dcnv2'"):
        resolve_config("dcnv")
    with pytest.raises(SlimctrError, match="num_cross_layers"):
        resolve_config("dcnv2", overrides=["model.num_cros_layers=4"])


@pytest.mark.parametrize("optimizer", ["lazy_adam", "adam"])
def test_both_embedding_optimizers_train_with_l2_and_clipping(store, tmp_path, optimizer):
    extra = [f"train.embedding_optimizer={optimizer}", "train.embedding_l2=0.01"]
    # one epoch of ~20 steps: a learning rate of 1e-2 makes it enough to learn something
    config = _config(extra=[*extra, "train.grad_clip_norm=1", "train.epochs=1", "train.lr=0.01"])
    metrics = run.train(store.path, tmp_path / "r", config)
    assert 0.5 < metrics["test"]["auc"] <= 1


def test_config_file_then_overrides_then_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("seed: 3\nmodel:\n  embedding_dim: 8\ntrain:\n  epochs: 7\n  lr: 0.01\n")
    config = resolve_config("dcnv2", config_file=path, overrides=["train.lr=0.002"], seed=5)
    assert (config.seed, config.model.embedding_dim, config.train.epochs) == (5, 8, 7)
    assert config.train.lr == 0.002
    path.write_text("model_name: deepfm\n")
    with pytest.raises(SlimctrError, match="for model 'deepfm'"):
        resolve_config("dcnv2", config_file=path)
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(SlimctrError, match=r"did you mean 'train\.epochs'"):
        resolve_config("dcnv2", config_file=path)


def test_presets_fill_only_what_the_run_does_not_choose(tmp_path):
    auto = resolve_config("gdcn_p").train
    assert (auto.preset, auto.batch_size, auto.epochs) == ("auto", None, None)
    assert auto.embedding_l2 == 0.01
    assert (auto.early_stopping_patience, auto.plateau_patience) == (2, 0)
    assert auto == TrainConfig()  # the fields' defaults are the auto preset's
    paper = resolve_config("gdcn_p", overrides=["train.preset=paper"]).train
    assert (
        paper.preset,
        paper.early_stopping_patience,
        paper.plateau_patience,
        paper.weight_decay,
        paper.batch_size,
        paper.epochs,
        paper.embedding_l2,
    ) == ("paper", 5, 3, 0.0, 4096, 50, 0.0)
    reference = resolve_config("gdcn_p", overrides=["train.preset=reference_code"]).train
    assert (
        reference.early_stopping_patience,
        reference.plateau_patience,
        reference.weight_decay,
    ) == (4, 5, 1e-6)
    mixed = resolve_config(
        "gdcn_p", overrides=["train.preset=reference_code", "train.plateau_patience=2"]
    ).train
    assert (mixed.early_stopping_patience, mixed.plateau_patience) == (4, 2)
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  preset: reference_code\n  weight_decay: 0.0\n")
    from_file = resolve_config("gdcn_p", config_file=path).train
    assert (from_file.weight_decay, from_file.early_stopping_patience) == (0.0, 4)
    with pytest.raises(SlimctrError, match=r"train\.preset"):
        resolve_config("gdcn_p", overrides=["train.preset=fast"])


@pytest.mark.parametrize(
    ("rows", "batch", "epochs"),
    [(1_000, 256, 200), (80_000, 512, 128), (202_027, 1024, 102), (36_000_000, 4096, 10)],
)
def test_auto_chooses_the_batch_and_epochs_from_the_training_rows(rows, batch, epochs):
    chosen = TrainConfig().for_rows(rows)
    assert (chosen.batch_size, chosen.epochs) == (batch, epochs)
    steps = -(-rows // batch)
    assert steps >= min(100, rows / 256) or batch == 4096  # about 100 steps an epoch or more
    mine = TrainConfig(batch_size=64, epochs=3).for_rows(rows)  # what a run sets stays
    assert (mine.batch_size, mine.epochs) == (64, 3)


def test_a_run_records_the_batch_and_epochs_auto_chose(store, tmp_path):
    config = resolve_config("lr", overrides=["train.early_stopping_patience=1"], threads=1)
    assert (config.train.batch_size, config.train.epochs) == (None, None)
    run.train(store.path, tmp_path / "r", config)
    recorded = RunDir(tmp_path / "r").config().train
    assert (recorded.batch_size, recorded.epochs) == (256, 200)  # 9,600 training rows
    again = run.train(store.path, tmp_path / "r", config, resume=True)  # the same run, reused
    assert again == RunDir(tmp_path / "r").metrics()


def test_precision_auto_follows_the_cpu(monkeypatch):
    from slimctr.training import trainer

    monkeypatch.setattr(trainer, "_cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert trainer.resolve_precision("auto") == "fp32"
    monkeypatch.setattr(trainer, "_cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    assert trainer.resolve_precision("auto") == "bf16"
    assert trainer.resolve_precision("fp32") == "fp32"


def test_a_run_keeps_the_precision_auto_resolved_to_on_another_machine(
    store, tmp_path, monkeypatch
):
    from slimctr.training import trainer

    config = _config(extra=["train.epochs=2"])
    assert config.train.precision == "auto"
    monkeypatch.setattr(trainer, "_cpu_flags", lambda: frozenset({"amx_bf16"}))
    with pytest.raises(KeyboardInterrupt):
        run.train(store.path, tmp_path / "r", config, progress=_Interrupt(epoch=1, step=1))
    assert RunDir(tmp_path / "r").precision() == "bf16"
    monkeypatch.setattr(trainer, "_cpu_flags", lambda: frozenset())  # a machine without bf16
    metrics = run.train(store.path, tmp_path / "r", config, resume=True)
    assert metrics["precision"] == "bf16"
    assert run.load_model(tmp_path / "r").bf16
    fresh = run.train(store.path, tmp_path / "fresh", config)
    assert fresh["precision"] == "fp32" and not run.load_model(tmp_path / "fresh").bf16


@pytest.mark.parametrize("model", ["deepfm", "lr", "dcnv2"])
def test_first_order_weights_are_their_own_line_of_the_size(store, model):
    """Dimension-search spec 1.4.4: a linear term's scalar per feature value is counted apart
    from the embeddings, and in the model's total."""
    overrides = [] if model == "lr" else ["model.embedding_dim=4"]
    built = build_model(resolve_config(model, overrides=overrides), store.schema)
    size = run.model_size(built)
    rows = sum(f.vocab_size or 1 for f in store.schema.fields)
    linear = rows if model in ("deepfm", "lr") else 0
    assert size["first_order_params"] == linear
    width = 0 if model == "lr" else built.embedding.field_dims[0]
    assert size["embedding_params"] == rows * width
    assert size["embedding_bytes"] == 4 * size["embedding_params"]
    assert size["num_params"] >= size["embedding_params"] + linear
