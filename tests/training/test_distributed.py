"""Data parallelism: two processes (torchrun, gloo) train exactly as one with the same global
batch, and a run resumes with another number of processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from slimctr.data.prepare import PrepareOptions, Sources, prepare
from slimctr.runconfig import resolve_config
from slimctr.rundir import RunDir
from slimctr.training import run
from slimctr.training.callbacks import Callback
from tests.conftest import write_text

# no BatchNorm and no dropout: the only per-rank effects (see slimctr.training.distributed)
SETTINGS = [
    "model.hidden_dims=[32,16]",
    "model.batch_norm=false",
    "model.embedding_dim=4",
    "train.batch_size=201",  # shares of 101 and 100 rows, and a tail batch of 190
    "train.epochs=2",
    "train.eval_batch_size=333",  # shares of unequal size, gathered back in row order
    "train.precision=fp32",  # bf16 (auto's choice on CPUs with bf16 units) rounds shares apart
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    lines = ["label,a,b,n"] + [
        f"{(i * 7) % 3 == 0:d},a{i % 17},b{i % 5},{i % 11}.5" for i in range(3001)
    ]
    built, _ = prepare(
        Sources(train=(write_text(tmp / "s.csv", lines),)), tmp / "d", PrepareOptions()
    )
    return built


def _launch(processes, *target, cwd=None):
    """``target`` (a script, or ``-m`` and a module with its arguments) started by torchrun in
    ``processes`` processes of one thread each, in ``cwd``; its stdout once every rank has
    succeeded."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={processes}", *target,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _torchrun(store, out, processes, *extra):
    stdout = _launch(
        processes, "-m", "slimctr", "train", str(store.path), "--model", "dnn",
        "--out", str(out), "--threads", "1", "--json", *(f"--set={s}" for s in SETTINGS), *extra,
    )  # fmt: skip
    assert stdout.count('"processes"') == 1  # rank 0 alone reports


def _weights(out):
    return run.load_model(out).module.state_dict()


@pytest.mark.parametrize("optimizer", ["lazy_adam", "adam"])  # sparse and dense gradients
def test_two_processes_train_as_one_with_the_same_global_batch(store, tmp_path, optimizer):
    """The embedding L2 counts once, on the rows the global batch touched."""
    settings = [f"train.embedding_optimizer={optimizer}", "train.embedding_l2=0.01"]
    config = resolve_config("dnn", overrides=[*SETTINGS, *settings], threads=1)
    alone = run.train(store.path, tmp_path / "one", config)
    _torchrun(store, tmp_path / "two", 2, *(f"--set={s}" for s in settings))
    together = RunDir(tmp_path / "two").metrics()
    assert together["processes"] == 2
    assert together["valid"]["auc"] == pytest.approx(alone["valid"]["auc"], abs=1e-9)
    assert together["test"]["logloss"] == pytest.approx(alone["test"]["logloss"], rel=1e-6)
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-5, atol=1e-6)


def test_a_run_resumes_with_another_number_of_processes(store, tmp_path):
    class StopAfterFirstEpoch(Callback):
        def on_epoch_start(self, trainer):
            if trainer.epoch == 1:
                raise KeyboardInterrupt

    config = resolve_config("dnn", overrides=SETTINGS, threads=1)
    whole = run.train(store.path, tmp_path / "whole", config)
    with pytest.raises(KeyboardInterrupt):
        run.train(store.path, tmp_path / "cut", config, progress=StopAfterFirstEpoch())
    _torchrun(store, tmp_path / "cut", 2, "--resume")
    resumed = RunDir(tmp_path / "cut").metrics()
    assert resumed["valid"]["auc"] == pytest.approx(whole["valid"]["auc"], abs=1e-9)
    one, two = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-5, atol=1e-6)


LEAVE = """
import os
import torch
from slimctr.training.distributed import World

world = World.from_env()
torch.optim.Adam([torch.nn.Parameter(torch.ones(1))])  # imports torch._dynamo, as training does
world.sum(1.0)
world.leave()
threads = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
with open(f"{os.environ['RANK']}.left", "w") as out:  # one file per rank: printed lines interleave
    out.write(repr(sorted(name for name in threads if "gloo" in name)))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="lists threads with Linux's /proc")
def test_no_gloo_thread_outlives_leaving_the_group(tmp_path):
    """A gloo thread still running while the interpreter shuts down can abort a rank after a
    finished run (now and then, so a resumed two-process run failed one time in a few dozen),
    so leaving the group must stop them all."""
    script = write_text(tmp_path / "leave.py", LEAVE.splitlines())
    _launch(2, str(script), cwd=tmp_path)
    assert [(tmp_path / f"{rank}.left").read_text() for rank in (0, 1)] == ["[]", "[]"]
