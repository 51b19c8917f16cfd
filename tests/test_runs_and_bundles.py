"""Runs you can trust and ship: run-folder states, the model bundle, integrity, and the defects a
careful user found (issue 14). Every test here failed on the code before the bundle existed."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil

import numpy as np
import polars as pl
import pytest

import slimctr
from slimctr import runconfig
from slimctr.bundle import Bundle
from slimctr.errors import SlimctrError
from slimctr.rundir import RunDir, RunState
from tests.conftest import write_text
from tests.test_cli_train import FAST as CLI_FAST
from tests.test_cli_train import _one_line_error

# ~24 steps: at a learning rate of 1e-2 enough for DCNv2 to learn the planted rule
FAST = [*CLI_FAST, "--set", "train.lr=0.01"]
FRAPPE = ("user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather",
          "country", "city")  # fmt: skip


def _frappe_lines(rows: int, seed: int) -> list[str]:
    """Frappe_x1's layout (a header, ten integer-coded categorical fields) with a planted click
    rule, so that a model learns something and column order matters."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 12, size=(rows, len(FRAPPE)))
    labels = ((values[:, 0] + values[:, 1]) % 3 == 0).astype(int)
    body = [",".join(map(str, [y, *row])) for y, row in zip(labels, values, strict=True)]
    return ["label," + ",".join(FRAPPE), *body]


@pytest.fixture(scope="module")
def frappe_run(tmp_path_factory):
    """A finished DCNv2 run on a tiny store prepared with --dataset frappe."""
    from slimctr.cli import main

    tmp = tmp_path_factory.mktemp("frappe")
    folder = tmp / "frappe" / "Frappe_x1_csv"
    folder.mkdir(parents=True)
    for name, rows, seed in (("train", 3000, 0), ("valid", 600, 1), ("test", 600, 2)):
        write_text(folder / f"{name}.csv", _frappe_lines(rows, seed))
    assert (
        main(["prepare", str(tmp / "frappe"), "--dataset", "frappe", "--out", str(tmp / "d")]) == 0
    )
    args = ["train", str(tmp / "d"), "--model", "DCNv2", "--out", str(tmp / "run"), *FAST]
    assert main(args) == 0
    return tmp


def _probabilities(path) -> np.ndarray:
    return pl.read_csv(path)["probability"].to_numpy()


def test_predict_matches_columns_by_name_for_a_registered_dataset(cli, frappe_run, tmp_path):
    run = frappe_run / "run"
    lines = write_text(tmp_path / "rows.csv", _frappe_lines(200, 7)).read_text().splitlines()
    table = [line.split(",") for line in lines]
    unlabelled = [row[1:] for row in table]
    write_text(tmp_path / "new.csv", [",".join(row) for row in unlabelled])
    write_text(tmp_path / "reversed.csv", [",".join(row[::-1]) for row in unlabelled])
    write_text(tmp_path / "missing.csv", [",".join(row[:9]) for row in unlabelled])
    extra = [",".join([*row, "tag" if i == 0 else "x"]) for i, row in enumerate(unlabelled)]
    write_text(tmp_path / "extra.csv", extra)
    assert cli("predict", run, tmp_path / "new.csv", "--out", tmp_path / "a.csv").code == 0
    assert cli("predict", run, tmp_path / "reversed.csv", "--out", tmp_path / "b.csv").code == 0
    assert np.array_equal(_probabilities(tmp_path / "a.csv"), _probabilities(tmp_path / "b.csv"))
    assert np.unique(_probabilities(tmp_path / "a.csv")).size > 10  # the fields matter
    _one_line_error(
        cli("predict", run, tmp_path / "missing.csv", "--out", tmp_path / "c.csv"), "'city'"
    )
    assert not (tmp_path / "c.csv").exists()
    with_extra = cli("predict", run, tmp_path / "extra.csv", "--out", tmp_path / "d.csv")
    assert (
        with_extra.code == 0 and "ignored 1 column" in with_extra.err and "'tag'" in with_extra.err
    )
    assert np.array_equal(_probabilities(tmp_path / "a.csv"), _probabilities(tmp_path / "d.csv"))


def test_a_copied_bundle_predicts_bit_for_bit_without_the_store(cli, frappe_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(frappe_run, work)
    rows = write_text(tmp_path / "rows.csv", _frappe_lines(300, 8))
    assert cli("predict", work / "run", rows, "--out", tmp_path / "from_run.parquet").code == 0
    exported = cli("export", work / "run", "--out", tmp_path / "shipped", "--json")
    assert exported.code == 0, exported.err
    elsewhere = tmp_path / "elsewhere" / "model"
    shutil.copytree(tmp_path / "shipped", elsewhere)
    shutil.rmtree(work)  # the run and its training store are gone
    assert cli("predict", elsewhere, rows, "--out", tmp_path / "from_bundle.parquet").code == 0
    before = pl.read_parquet(tmp_path / "from_run.parquet")["probability"].to_numpy()
    after = pl.read_parquet(tmp_path / "from_bundle.parquet")["probability"].to_numpy()
    assert before.tobytes() == after.tobytes()
    # the Python API, on a data frame with the columns in another order, agrees to the bit
    model = slimctr.load_model(elsewhere)
    frame = pl.read_csv(rows, infer_schema=False).drop("label").select(list(reversed(FRAPPE)))
    assert model.predict(frame).tobytes() == before.tobytes()
    assert model.predict(frame.to_pandas()).tobytes() == before.tobytes()
    assert model.predict(frame.to_dict(as_series=False)).tobytes() == before.tobytes()
    assert model.config.model_name == "dcnv2" and [f.name for f in model.schema.fields] == [*FRAPPE]
    scored = cli("evaluate", elsewhere, "--input", rows, "--json")
    assert scored.code == 0 and 0.5 < scored.json()["auc"] <= 1
    _one_line_error(cli("evaluate", elsewhere), "is a bundle", "--input")


@pytest.fixture
def copied_run(frappe_run, tmp_path):
    shutil.copytree(frappe_run, tmp_path / "copy")
    return tmp_path / "copy" / "run"


def _flip_middle(path, count=400):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + count] = bytes(b ^ 0xFF for b in data[middle : middle + count])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        _flip_middle,
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),  # truncated
        lambda p: p.write_bytes(b""),  # empty
        lambda p: p.write_bytes(pickle.dumps({"not": "weights"})),  # a foreign file
    ],
    ids=["flipped", "truncated", "empty", "foreign"],
)
def test_damaged_weights_are_one_line_naming_the_file(cli, copied_run, tmp_path, damage):
    damage(copied_run / "bundle" / "weights.safetensors")
    for args in (("evaluate", copied_run), ("predict", copied_run, "x.csv", "--out", "p.csv")):
        _one_line_error(cli(*args), "weights.safetensors", "corrupt or was changed")


@pytest.mark.parametrize("name", ["schema.json", "config.yaml", "metrics.json", "run.json"])
def test_a_run_file_that_is_not_what_was_written_is_one_line(cli, copied_run, name):
    (copied_run / name).write_text("{not json")
    _one_line_error(cli("evaluate", copied_run), name)
    _one_line_error(
        cli("fdo", copied_run, "--ratio", "0.9", "--out", copied_run.parent / "f"), name
    )


def test_a_bundle_missing_or_foreign_is_one_line(cli, copied_run, tmp_path):
    (copied_run / "bundle" / "manifest.json").unlink()
    _one_line_error(cli("evaluate", copied_run), "manifest.json")
    (tmp_path / "folder").mkdir()
    _one_line_error(cli("evaluate", tmp_path / "folder"), "not a slimctr model bundle")
    _one_line_error(cli("evaluate", tmp_path / "nowhere"), "no such run or bundle folder")


def test_a_damaged_checkpoint_is_one_line_on_resume(cli, frappe_run, tmp_path):
    from slimctr.training.callbacks import Callback

    class StopInSecondEpoch(Callback):
        def on_epoch_start(self, trainer):
            if trainer.epoch == 1:
                raise KeyboardInterrupt

    config = RunDir(frappe_run / "run").config()
    with pytest.raises(KeyboardInterrupt):
        slimctr_train(frappe_run / "d", tmp_path / "r", config, StopInSecondEpoch())
    (checkpoint,) = (tmp_path / "r").glob("checkpoint-*.pt")
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    args = ("train", frappe_run / "d", "--model", "dcnv2", "--out", tmp_path / "r", *FAST)
    _one_line_error(cli(*args, "--resume"), checkpoint.name, "corrupt")
    assert RunDir(tmp_path / "r").state is RunState.STARTED  # not failed: the data is not lost


def slimctr_train(data, out, config, progress):
    from slimctr.training import run

    return run.train(data, out, config, progress=progress)


def test_unfinished_and_failed_runs_are_refused_and_a_failed_one_can_be_rerun(
    cli, frappe_run, tmp_path
):
    from slimctr.training.callbacks import Callback

    class Interrupt(Callback):
        def on_step_end(self, trainer, batch, loss):
            raise KeyboardInterrupt

    config = RunDir(frappe_run / "run").config()
    with pytest.raises(KeyboardInterrupt):
        slimctr_train(frappe_run / "d", tmp_path / "cut", config, Interrupt())
    _one_line_error(cli("evaluate", tmp_path / "cut"), "not a finished run", "--resume")
    _one_line_error(cli("export", tmp_path / "cut", "--out", tmp_path / "e"), "never finished")
    # a training that fails (NaN scores) is recorded as failed, and the same --out trains again
    args = ("train", frappe_run / "d", "--model", "dcnv2", "--out", tmp_path / "r", *FAST)
    _one_line_error(cli(*args, "--set", "train.lr=1e30", "--json"), "cannot score")
    assert RunDir(tmp_path / "r").state is RunState.FAILED
    _one_line_error(cli("predict", tmp_path / "r", "x.csv", "--out", "p.csv"), "failed")
    assert cli(*args).code == 0
    assert RunDir(tmp_path / "r").state is RunState.FINISHED


def test_train_out_that_is_a_file_and_a_second_writer(cli, frappe_run, tmp_path):
    (tmp_path / "file").write_text("mine")
    args = ("train", frappe_run / "d", "--model", "dcnv2", *FAST)
    _one_line_error(cli(*args, "--out", tmp_path / "file"), "is a file")
    assert (tmp_path / "file").read_text() == "mine"
    from slimctr.files import exclusive

    with exclusive(tmp_path / "r", "the run"):
        _one_line_error(cli(*args, "--out", tmp_path / "r"), "another slimctr process")
    assert not (tmp_path / "r").exists()


def test_predict_output_rules(cli, frappe_run, tmp_path):
    run = frappe_run / "run"
    source = write_text(tmp_path / "one.csv", _frappe_lines(1, 3))
    _one_line_error(
        cli("predict", run, source, "--out", tmp_path / "no" / "p.csv"), "does not exist"
    )
    _one_line_error(cli("predict", run, source, "--out", source), "input file")
    assert source.read_text().startswith("label,")  # not overwritten
    one = cli("predict", run, source, "--out", tmp_path / "p.csv")
    assert one.code == 0 and "wrote 1 probability to" in one.out
    empty_labels = ["label," + ",".join(FRAPPE), *["," + ",".join(["3"] * 10)] * 2]
    write_text(tmp_path / "u.csv", empty_labels)  # predict needs no label
    assert cli("predict", run, tmp_path / "u.csv", "--out", tmp_path / "q.csv").code == 0


def test_headerless_input_with_columns(cli, frappe_run, tmp_path):
    run = frappe_run / "run"
    lines = _frappe_lines(50, 4)
    write_text(tmp_path / "h.csv", lines)
    write_text(tmp_path / "bare.csv", [",".join(line.split(",")[::-1]) for line in lines[1:]])
    assert cli("predict", run, tmp_path / "h.csv", "--out", tmp_path / "a.csv").code == 0
    names = ",".join(["label", *FRAPPE][::-1])
    assert (
        cli("predict", run, tmp_path / "bare.csv", "--columns", names, "--out", tmp_path / "b.csv")
    ).code == 0
    assert np.array_equal(_probabilities(tmp_path / "a.csv"), _probabilities(tmp_path / "b.csv"))


def test_model_names_as_pip_spells_them_and_long_values_are_cut(cli, tmp_path):
    assert runconfig.resolve_config("GDCN-P").model_name == "gdcn_p"
    assert runconfig.resolve_config("Wide.Deep").model_name == "wide_deep"
    result = cli("train", tmp_path, "--model", "x" * 100_000, "--out", tmp_path / "r")
    _one_line_error(result, "unknown model", "characters")
    assert len(result.err) < 400


def test_top_level_help_text(capsys):
    from slimctr.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    shown = capsys.readouterr().out
    assert "cli.md" not in shown and "contract" not in shown and "export" in shown


def _rewrite_config(bundle, text, version):
    """Make ``bundle`` hold config ``text`` as written at config ``version``."""
    (bundle / "config.yaml").write_text(text)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["config.yaml"] = hashlib.sha256(text.encode()).hexdigest()
    manifest["config_version"] = version
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(("flag", "precision"), [("false", "fp32"), ("true", "bf16")])
def test_a_version_1_bundle_loads_with_train_bf16_migrated(frappe_run, tmp_path, flag, precision):
    """Version 2 replaced train.bf16 by train.precision: bundles written before keep loading,
    with exactly the precision their flag said (not today's default, auto)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(frappe_run / "run" / "bundle", bundle)
    text = (bundle / "config.yaml").read_text()
    old, count = re.subn(r"\n  precision: (fp32|bf16)\n", f"\n  bf16: {flag}\n", text)
    assert count == 1  # a bundle holds the precision its run resolved
    _rewrite_config(bundle, old, 1)
    loaded = Bundle(bundle)
    assert loaded.config.train.precision == precision and loaded.bf16 == (precision == "bf16")
    _rewrite_config(bundle, text, runconfig.CONFIG_VERSION + 1)
    with pytest.raises(SlimctrError, match="newer slimctr"):
        Bundle(bundle)


@pytest.mark.parametrize(
    ("line", "optimizer"),
    [
        ("", "adam"),
        ("\n  sparse_embeddings: false", "adam"),
        ("\n  sparse_embeddings: true", "lazy_adam"),
    ],
)
def test_a_version_2_bundle_keeps_its_embedding_optimizer(frappe_run, tmp_path, line, optimizer):
    """Version 3 replaced train.sparse_embeddings (default false: dense Adam) by
    train.embedding_optimizer (default lazy_adam): older bundles keep the optimiser they had."""
    bundle = tmp_path / "bundle"
    shutil.copytree(frappe_run / "run" / "bundle", bundle)
    text = (bundle / "config.yaml").read_text()
    old, count = re.subn(r"\n  embedding_optimizer: \w+", line, text)
    assert count == 1
    _rewrite_config(bundle, old, 2)
    assert Bundle(bundle).config.train.embedding_optimizer == optimizer


def test_a_version_3_config_without_the_new_defaults_keeps_the_paper_settings():
    """Version 4 made the auto preset the default: a version-3 file that lacks a training key
    (written before the key existed) gets the paper preset's value, the default it trained
    with, so its recorded settings still reproduce it."""
    old = {"model_name": "dcnv2", "train": {"lr": 0.002}}
    migrated = runconfig.read_config(old, 3, "old.yaml").train
    paper = runconfig.resolve_config("dcnv2", overrides=["train.preset=paper", "train.lr=0.002"])
    assert migrated == paper.train
    assert (migrated.epochs, migrated.batch_size, migrated.embedding_l2) == (50, 4096, 0.0)
    today = runconfig.read_config(old, 4, "new.yaml").train  # the same file, read as today's
    assert (today.preset, today.batch_size, today.embedding_l2) == ("auto", None, 0.01)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 2}, "format 2"),
        ({"models": [{"config": "config.yaml", "weights": "w", "storage": "int8"}]}, "cannot read"),
        ({"router": {"kind": "groups"}}, "cannot read"),
        ({"files": {"../escape": "0" * 64}}, "outside the bundle"),
    ],
)
def test_bundles_this_version_cannot_read_are_refused(frappe_run, tmp_path, change, message):
    bundle = tmp_path / "bundle"
    shutil.copytree(frappe_run / "run" / "bundle", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**manifest, **change}))
    with pytest.raises(SlimctrError, match=message):
        Bundle(bundle)


def test_leftovers_of_a_killed_run_are_removed_by_the_next(cli, frappe_run, tmp_path):
    from slimctr.training.callbacks import Callback

    class Interrupt(Callback):
        def on_epoch_start(self, trainer):
            if trainer.epoch == 1:
                raise KeyboardInterrupt

    (tmp_path / ".r.tmp-99999").mkdir()  # a start killed while staging
    (tmp_path / ".r.tmp-99999" / "config.yaml").write_text("half written")
    with pytest.raises(KeyboardInterrupt):
        slimctr_train(frappe_run / "d", tmp_path / "r", RunDir(frappe_run / "run").config(),
                      Interrupt())  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    (tmp_path / "r" / ".bundle.tmp-99999").mkdir()  # a finish killed while staging
    args = ("train", frappe_run / "d", "--model", "dcnv2", "--out", tmp_path / "r", *FAST)
    assert cli(*args, "--resume").code == 0
    assert not (tmp_path / "r" / ".bundle.tmp-99999").exists()


def test_the_prepare_table_cuts_long_or_unprintable_names(cli, tmp_path):
    long = "c" * 100_000
    rows = [f"{i % 2},x{i % 3},y" for i in range(20)]
    source = write_text(tmp_path / "s.csv", [f'label,"a\tb",{long}', *rows])
    result = cli("prepare", source, "--out", tmp_path / "d")
    assert result.code == 0, result.err
    assert max(map(len, result.out.splitlines())) < 200 and "'a\\tb'" in result.out


def test_a_path_through_a_missing_folder_never_replaces_what_it_names(cli, frappe_run, tmp_path):
    """`missing/../run` names nothing until `missing` exists: checks must see `run` anyway."""
    shutil.copytree(frappe_run / "run", tmp_path / "run")
    shutil.copytree(frappe_run / "d", tmp_path / "d")
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    sneaky = tmp_path / "missing" / ".." / "run"
    _one_line_error(cli("export", tmp_path / "run", "--out", sneaky), "not empty")
    args = ("train", tmp_path / "d", "--model", "dcnv2", "--out", sneaky, *FAST)
    _one_line_error(cli(*args), "already holds a finished run")
    source = write_text(tmp_path / "s.csv", _frappe_lines(50, 1))
    store = tmp_path / "other" / ".." / "d"
    _one_line_error(cli("prepare", source, "--out", store), "already holds a different store")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
    assert RunDir(tmp_path / "run").state is RunState.FINISHED
    assert (tmp_path / "d" / "manifest.json").is_file()
