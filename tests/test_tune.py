"""slimctr tune: a tiny study on a small store (seconds), its files, resume and retry."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from slimctr.data.synthetic import SyntheticConfig, write_synthetic
from slimctr.models import MODELS
from slimctr.runconfig import resolve_config
from slimctr.rundir import RunDir
from slimctr.tuning import tune as tuning
from slimctr.tuning.space import Choice, full_space, model_space
from slimctr.tuning.tune import TuneOptions, suggest, tune

SMALL = ["train.epochs=2", "model.hidden_dims=[16]", "train.batch_size=512"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    write_synthetic(SyntheticConfig(rows=4_000, seed=5), tmp / "clicks.parquet")
    from slimctr.cli import main

    data = tmp / "data"
    assert (
        main(["prepare", str(tmp / "clicks.parquet"), "--dataset", "synthetic", "--out", str(data)])
        == 0
    )
    return data


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_model_has_a_space_whose_samples_are_valid_configs(model):
    space = full_space(MODELS[model].config)
    assert {p.key for p in space} >= {"train.lr", "train.embedding_l2", "train.batch_size"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        overrides = [f"{p.key}={suggest(trial, p)}" for p in space]
        config = resolve_config(model, overrides=overrides)  # unknown keys or values raise
        for param in space:
            section, key = param.key.split(".")
            value = getattr(getattr(config, section), key)
            if isinstance(param, Choice):
                assert value in param.choices
        study.tell(trial, 0.5)


def test_fixed_keys_leave_the_space_and_models_declare_their_own():
    keys = {p.key for p in full_space(MODELS["dcnv2"].config, ["train.lr", "model.dropout"])}
    assert "train.lr" not in keys and "model.dropout" not in keys
    assert "model.num_cross_layers" in keys
    assert "model.cin_layer_sizes" in {p.key for p in model_space(MODELS["xdeepfm"].config)}
    assert model_space(MODELS["lr"].config) == ()


def test_a_tiny_tune_writes_its_study_and_resumes_without_redoing_trials(store, tmp_path, cli):
    out = tmp_path / "tune"
    args = ["tune", store, "--model", "dcnv2", "--out", out, "--threads", "1", "--json"]
    args += [a for s in SMALL for a in ("--set", s)]
    first = cli(*args, "--trials", "3")
    assert first.code == 0, first.err
    summary = first.json()
    assert summary["trials"] == {"complete": 3}
    assert {"tune.json", "study.journal", "trials.csv", "best.yaml", "history.png"} <= {
        p.name for p in out.iterdir()
    }
    assert (out / "importance.png").stat().st_size > 1000

    # best.yaml trains as it is, with the winner's settings and the fixed ones
    best = resolve_config("dcnv2", config_file=out / "best.yaml")
    winner = summary["best"]["settings"]
    assert best.train.lr == winner["train.lr"] and best.model.dropout == winner["model.dropout"]
    assert best.model.hidden_dims == (16,) and best.train.epochs == 2
    command = f"# slimctr train {store} --model dcnv2 --config best.yaml"
    assert (out / "best.yaml").read_text().splitlines()[1] == command  # says how to use it

    second = cli(*args, "--trials", "5")
    assert second.code == 0, second.err
    with open(out / "trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["trial"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert second.err.count("valid AUC") == 2  # only the two new trials trained
    settings = [tuple(r[k] for k in rows[0] if k.startswith(("model.", "train."))) for r in rows]
    assert len(set(settings)) == 5  # the resumed sampler did not draw the first ones again
    complete = [r for r in rows if r["state"] == "complete"]
    assert len(list((out / "trials").iterdir())) == len(complete)  # pruned runs are removed

    # the best trial is the one with the highest validation AUC, and nothing else chose it
    aucs = {int(r["trial"]): float(r["valid_auc"]) for r in complete}
    assert second.json()["best"]["trial"] == max(aucs, key=aucs.get)

    again = cli(*args, "--trials", "5", "--set", "train.epochs=3")
    assert again.code == 1 and "holds another tune" in again.err


def test_rerun_top_trains_more_seeds_and_names_the_best_mean(store, tmp_path):
    options = TuneOptions(trials=3, seed=1, rerun_top=2, seeds=2, threads=1)
    summary = tune(store, "fm", tmp_path / "t", options, overrides=SMALL[:1] + SMALL[2:])
    reruns = summary["reruns"]
    assert len(reruns) == 2 and all(r["seeds"] == [1, 2] for r in reruns)
    assert summary["best"] == max(reruns, key=lambda r: r["valid_auc_mean"])
    for r in reruns:
        assert RunDir(tmp_path / "t" / "rerun" / f"{r['run']}-2").metrics()["seed"] == 2
    assert (tmp_path / "t" / "rerun.csv").read_text().count("\n") == 3


def test_two_objectives_give_a_pareto_front(store, tmp_path):
    options = TuneOptions(trials=4, objectives=("auc", "bytes"), threads=1)
    summary = tune(store, "fm", tmp_path / "t", options, overrides=SMALL[:1] + SMALL[2:])
    front = summary["pareto"]
    assert front and (tmp_path / "t" / "pareto.png").is_file()
    for a in front:  # no member of the front is beaten on both objectives by another
        assert not any(
            b["valid_auc_mean"] > a["valid_auc_mean"]
            and b["embedding_bytes"] < a["embedding_bytes"]
            for b in front
        )


def test_a_killed_trial_is_queued_again_and_continues_its_run(store, tmp_path, monkeypatch):
    out = tmp_path / "t"
    command = [sys.executable, "-m", "slimctr", "tune", str(store), "--model", "fm"]
    command += ["--out", str(out), "--trials", "1", "--threads", "1"]
    command += ["--set", "train.epochs=40", "--set", "train.batch_size=64"]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("trials/*/checkpoint-*.pt")):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    folder = next(out.glob("trials/*/checkpoint-*.pt")).parent
    interrupted = len(RunDir(folder).checkpoint()["history"])

    monkeypatch.setattr(tuning, "STALE_SECONDS", 0.0)
    options = TuneOptions(trials=1, threads=1)
    summary = tune(store, "fm", out, options, overrides=["train.epochs=40", "train.batch_size=64"])
    assert summary["trials"] == {"fail": 1, "complete": 1}
    assert summary["best"]["run"] == folder.name  # the same settings, the same run folder
    history = RunDir(folder).history()
    assert interrupted >= 1 and len(history) > interrupted


def test_user_errors_are_one_line(cli, store, tmp_path):
    result = cli("tune", store, "--model", "dcnv2", "--trials", "0", "--out", tmp_path / "x")
    assert result.code == 1 and "--trials must be >= 1" in result.err
    for timeout in ("nan", "inf", "0"):
        result = cli(
            "tune",
            store,
            "--model",
            "lr",
            "--trials",
            "1",
            "--out",
            tmp_path / "x",
            "--timeout",
            timeout,
        )
        assert result.code == 1 and "--timeout must be a finite number" in result.err
    result = cli(
        "tune",
        store,
        "--model",
        "lr",
        "--trials",
        "1",
        "--out",
        tmp_path / "x",
        "--objective",
        "bytes",
    )
    assert result.code == 1 and "--objective must be" in result.err
    assert not (tmp_path / "x").exists()
    result = cli(
        "tune", tmp_path / "nowhere", "--model", "lr", "--trials", "1", "--out", tmp_path / "y"
    )
    assert result.code == 1 and "nowhere" in result.err and not (tmp_path / "y").exists()
