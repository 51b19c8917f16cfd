"""``slimctr tune``: Optuna's TPE over a model's search space, pruned on validation AUC.

Each trial samples the model's space (``slimctr.tuning.space``) minus the keys the user fixed
with ``--set``, trains one run with those settings on top of the base configuration (defaults,
``--config``, ``--set``), and scores it by its best validation AUC; the test split plays no part
in any choice. A trial reports its validation AUC after every epoch, and Optuna's median pruner
stops one that falls behind the others at the same epoch (a pruned run's folder is removed, so
it is never mistaken for a finished one). With ``objectives=("auc", "bytes")`` the study is
multi-objective (validation AUC up, embedding bytes down; Optuna does not prune those) and the
result is its Pareto front.

Layout of ``DIR``::

    tune.json       what is tuned: store, model, base configuration, fixed keys, objectives, seed
    study.journal   Optuna's journal file storage: several processes may share it, and a tune
                    stopped at any moment resumes where it was
    trials/<id>/    one run folder per sampled configuration, named by its settings
    trials.csv      every trial: state, validation AUC (and bytes), epochs, seconds, settings
    history.png     validation AUC of each trial and the best so far
    importance.png  which settings mattered (Optuna's fANOVA importance)
    pareto.png      the AUC-bytes front (two objectives only)
    rerun/          --rerun-top: the best trials trained again with more seeds; rerun.csv
    best.yaml       the winner's whole configuration: ``slimctr train --config best.yaml``

Resuming: the trials stop at ``trials`` finished (complete or pruned) trials in all, however many
processes or restarts it took. A trial whose process died (its lock is free) is marked failed
and queued again with the same settings; it trains into the same run folder, so it continues
from that run's last finished epoch. A trial that raises an error stops the tune with it.
TPE is seeded with the tune's seed plus the number of trials already in the study: an
uninterrupted tune in one process is repeatable, and a resumed one does not draw its first
settings again.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import shutil
import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from slimctr.config import dump_yaml, to_dict
from slimctr.data.store import open_store
from slimctr.errors import SlimctrError
from slimctr.files import atomic_path, exclusive, write_json
from slimctr.models import MODELS
from slimctr.runconfig import RunConfig, resolve_config
from slimctr.rundir import RunDir
from slimctr.training import run
from slimctr.training.callbacks import Callback, ProgressBar
from slimctr.tuning.space import Choice, Float, Int, Param, full_space

if TYPE_CHECKING:
    import optuna

    from slimctr.training.trainer import Trainer

Direction = Literal["maximize", "minimize"]
OBJECTIVES: dict[tuple[str, ...], list[Direction]] = {
    ("auc",): ["maximize"],
    ("auc", "bytes"): ["maximize", "minimize"],
}
STUDY = "slimctr"
STALE_SECONDS = 10.0  # a trial younger than this may not have taken its lock yet


@dataclass(frozen=True, kw_only=True)
class TuneOptions:
    """How long and how to tune; ``seeds`` counts the seeds of ``--rerun-top``."""

    trials: int
    timeout: float | None = None  # seconds for this process's trials; None: no limit
    objectives: tuple[str, ...] = ("auc",)
    seed: int = 0  # the sampler's, and every trial's training seed
    rerun_top: int = 0
    seeds: int = 3
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise SlimctrError(f"--trials must be >= 1, got {self.trials}")
        if self.timeout is not None and not 0 < self.timeout < math.inf:
            raise SlimctrError(
                f"--timeout must be a finite number of seconds > 0, got {self.timeout}"
            )
        if self.objectives not in OBJECTIVES:
            choices = " or ".join(",".join(o) for o in OBJECTIVES)
            raise SlimctrError(f"--objective must be {choices}, got {','.join(self.objectives)}")
        if self.rerun_top < 0 or self.seeds < 1:
            raise SlimctrError("--rerun-top must be >= 0 and --seeds >= 1")


def tune(
    data: Path,
    model: str,
    out: Path,
    options: TuneOptions,
    *,
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    log: TextIO | None = None,
) -> dict[str, Any]:
    """Run (or resume) the tune in ``out``; returns its summary (also in ``--json``)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial instead
    log = log or sys.stderr
    base = resolve_config(
        model,
        config_file=config_file,
        overrides=overrides,
        seed=options.seed,
        threads=options.threads,
    )
    open_store(data)  # a missing or damaged store fails now, not in the first trial
    fixed = [o.partition("=")[0].strip() for o in overrides]
    space = full_space(MODELS[base.model_name].config, fixed)
    if not space:
        raise SlimctrError(f"nothing to tune: --set fixes every setting {model} can tune")
    tuning = Tuning(data, out, base, config_file, list(overrides), space, options, log)
    tuning.record()
    study = tuning.study()
    tuning.retry_stale(study)
    if len(study.get_trials(deepcopy=False, states=finished_states())) < options.trials:
        stop = optuna.study.MaxTrialsCallback(options.trials, states=finished_states())
        study.optimize(tuning.objective, timeout=options.timeout, callbacks=[stop])
    return tuning.report(study)


def finished_states() -> tuple[optuna.trial.TrialState, ...]:
    """The states that count towards ``trials``: the same for the check and Optuna's stop."""
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


class Pruning(Callback):
    """Reports each epoch's validation AUC to the trial; stops training when Optuna prunes."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.reported: set[int] = set()
        self.pruned = False

    def on_fit_start(self, trainer: Trainer) -> None:
        self.replay(trainer.history)  # the epochs of a resumed run

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.replay([record])
        if self.trial.should_prune():
            self.pruned = trainer.stop = True

    def replay(self, history: Sequence[dict[str, Any]]) -> None:
        for record in history:
            if record["epoch"] not in self.reported:
                self.trial.report(record["valid"]["auc"], record["epoch"])
                self.reported.add(record["epoch"])


@dataclass
class Tuning:
    data: Path
    out: Path
    base: RunConfig
    config_file: str | Path | None
    overrides: list[str]
    space: tuple[Param, ...]
    options: TuneOptions
    log: TextIO

    @property
    def multi(self) -> bool:
        return len(self.options.objectives) > 1

    def record(self) -> None:
        """Write tune.json, or check that the tune already in ``out`` is this one."""
        wanted = {
            "data": str(self.data.resolve()),
            "model": self.base.model_name,
            "base": to_dict(dataclasses.replace(self.base, threads=None)),
            "fixed": sorted(self.overrides),
            "space": [dataclasses.asdict(p) for p in self.space],
            "objectives": list(self.options.objectives),
            "seed": self.options.seed,
        }
        wanted = json.loads(json.dumps(wanted))  # tuples as lists, as read back
        path = self.out / "tune.json"
        if path.is_file():
            found = json.loads(path.read_text())
            if found != wanted:
                changed = sorted(k for k in wanted if found.get(k) != wanted[k])
                raise SlimctrError(
                    f"{self.out} holds another tune (it differs in: {', '.join(changed)}); "
                    "give another --out, or the same settings to resume it"
                )
            return
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(path, wanted)

    def study(self) -> optuna.Study:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(self.out / "study.journal")))
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
        study = optuna.create_study(
            storage=storage,
            study_name=STUDY,
            pruner=pruner,
            directions=OBJECTIVES[self.options.objectives],
            load_if_exists=True,
        )
        # Seeded by the trials so far: a resumed tune must not draw the first ones again.
        seed = self.options.seed + len(study.get_trials(deepcopy=False))
        study.sampler = optuna.samplers.TPESampler(seed=seed)
        return study

    def retry_stale(self, study: optuna.Study) -> None:
        """Fail each running trial whose process is gone, and queue its settings again."""
        from optuna.trial import TrialState

        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
            if time.time() - started < STALE_SECONDS:
                continue
            try:
                with exclusive(self._trial_lock(trial.number), "the trial"):
                    pass
            except SlimctrError:
                continue  # another process is training it
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            self.log.write(f"trial {trial.number} was interrupted: queued again\n")

    def objective(self, trial: optuna.Trial) -> float | tuple[float, float]:
        import optuna

        settings = [f"{p.key}={suggest(trial, p)}" for p in self.space]
        config = resolve_config(
            self.base.model_name,
            config_file=self.config_file,
            overrides=[*settings, *self.overrides],
            seed=self.options.seed,
            threads=self.options.threads,
        )
        folder = self.out / "trials" / run_id(settings)
        trial.set_user_attr("run", folder.name)
        pruning = None if self.multi else Pruning(trial)
        acting = [pruning] if pruning else []
        progress = ProgressBar(self.log, title=f"trial {trial.number}")
        started = time.perf_counter()
        with exclusive(self._trial_lock(trial.number), "the trial"):
            metrics = run.train(
                self.data, folder, config, resume=True, progress=progress, callbacks=acting
            )
        if pruning is not None:
            pruning.replay(RunDir(folder).history())  # a finished run found there: its epochs
        trial.set_user_attr("best_epoch", metrics["best_epoch"])
        trial.set_user_attr("epochs_run", len(RunDir(folder).history()))
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        trial.set_user_attr("embedding_bytes", metrics["embedding_bytes"])
        auc = metrics["valid"]["auc"]
        if pruning is not None and pruning.pruned:
            shutil.rmtree(folder)  # stopped early: never to be reused as a finished run
            self.log.write(f"trial {trial.number}: pruned at valid AUC {auc:.4f}\n")
            raise optuna.TrialPruned()
        self.log.write(f"trial {trial.number}: valid AUC {auc:.4f}\n")
        if self.multi:
            return auc, float(metrics["embedding_bytes"])
        return auc

    def report(self, study: optuna.Study) -> dict[str, Any]:
        """trials.csv, the plots, the reruns and best.yaml; the summary as JSON data."""
        from optuna.trial import TrialState

        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise SlimctrError(f"no trial of {self.out} has finished yet: nothing to report")
        self._write_trials(study)
        plots = self._plots(study)
        ranked = self._ranked(study)
        candidates = ranked[: max(self.options.rerun_top, 1)]
        reruns = [self._rerun(t) for t in candidates] if self.options.rerun_top else []
        if reruns:
            self._write_reruns(reruns)
            winner = max(reruns, key=lambda r: r["valid_auc_mean"])
        else:
            winner = self._summary(candidates[0], [self.options.seed])
        folder = self.out / "trials" / winner["run"]
        self._write_best(RunDir(folder).config(), winner)
        states = Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False))
        summary: dict[str, Any] = {
            "out": str(self.out),
            "model": self.base.model_name,
            "objectives": list(self.options.objectives),
            "trials": dict(states),
            "best": winner,
            "config": str(self.out / "best.yaml"),
            "plots": plots,
            "reruns": reruns,
        }
        if self.multi:
            summary["pareto"] = [self._summary(t, [self.options.seed]) for t in ranked]
        return summary

    # -- internals ---------------------------------------------------------------------------

    def _trial_lock(self, number: int) -> Path:
        (self.out / "trials").mkdir(parents=True, exist_ok=True)
        return self.out / "trials" / f"trial-{number}"

    def _seed_run(self, folder: Path, seed: int) -> Path:
        """Where a trial's configuration trained with ``seed`` is: the trial's own run for the
        tune's seed, a run under rerun/ for the others."""
        return folder if seed == self.options.seed else self.out / "rerun" / f"{folder.name}-{seed}"

    def _ranked(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        """The best trials first: by validation AUC, or the Pareto front by AUC."""
        from optuna.trial import TrialState

        pool = (
            study.best_trials
            if self.multi
            else study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        )
        ranked, runs = [], set()
        for trial in sorted(pool, key=lambda t: (-t.values[0], t.number)):
            if trial.user_attrs["run"] not in runs:  # the same settings drawn twice: once
                ranked.append(trial)
                runs.add(trial.user_attrs["run"])
        return ranked

    def _rerun(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        """The trial's configuration trained with ``seeds`` seeds (its own run is the first)."""
        folder = self.out / "trials" / trial.user_attrs["run"]
        config = RunDir(folder).config()
        seeds = [self.options.seed + k for k in range(self.options.seeds)]
        for seed in seeds[1:]:
            again = dataclasses.replace(config, seed=seed, threads=self.options.threads)
            progress = ProgressBar(self.log, title=f"trial {trial.number} seed {seed}")
            out = self._seed_run(folder, seed)
            run.train(self.data, out, again, resume=True, progress=progress)
        return self._summary(trial, seeds)

    def _summary(self, trial: optuna.trial.FrozenTrial, seeds: list[int]) -> dict[str, Any]:
        folder = self.out / "trials" / trial.user_attrs["run"]
        metrics = [RunDir(self._seed_run(folder, seed)).metrics() for seed in seeds]
        valid = [m["valid"]["auc"] for m in metrics]
        return {
            "trial": trial.number,
            "run": folder.name,
            "settings": settings_of(trial),
            "seeds": seeds,
            "valid_auc_mean": statistics.mean(valid),
            "valid_auc_std": statistics.stdev(valid) if len(valid) > 1 else 0.0,
            "test_auc_mean": statistics.mean(m["test"]["auc"] for m in metrics),
            "embedding_bytes": metrics[0]["embedding_bytes"],
        }

    def _write_trials(self, study: optuna.Study) -> None:
        keys = [p.key for p in self.space]
        header = ["trial", "state", "valid_auc", *(["embedding_bytes"] if self.multi else [])]
        header += ["best_epoch", "epochs_run", "seconds", *keys]
        with atomic_path(self.out / "trials.csv") as path, open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for trial in study.get_trials(deepcopy=False):
                reported = trial.intermediate_values  # a pruned trial has its last report
                auc = trial.values[0] if trial.values else reported.get(max(reported, default=0))
                row = [trial.number, trial.state.name.lower(), "" if auc is None else f"{auc:.6f}"]
                if self.multi:
                    row.append(f"{trial.values[1]:.0f}" if trial.values else "")
                attrs, settings = trial.user_attrs, settings_of(trial)
                row += [attrs.get(k, "") for k in ("best_epoch", "epochs_run", "seconds")]
                writer.writerow(row + [settings.get(k, "") for k in keys])

    def _write_reruns(self, reruns: list[dict[str, Any]]) -> None:
        with atomic_path(self.out / "rerun.csv") as path, open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["trial", "seeds", "valid_auc_mean", "valid_auc_std", "test_auc_mean"])
            for r in reruns:
                seeds = " ".join(map(str, r["seeds"]))
                scores = (r["valid_auc_mean"], r["valid_auc_std"], r["test_auc_mean"])
                writer.writerow([r["trial"], seeds, *(f"{s:.6f}" for s in scores)])

    def _write_best(self, config: RunConfig, winner: dict[str, Any]) -> None:
        chosen = dataclasses.replace(config, seed=self.options.seed, threads=None)
        seeds = len(winner["seeds"])
        header = (
            f"# slimctr tune {self.out}: trial {winner['trial']}, validation AUC "
            f"{winner['valid_auc_mean']:.4f} (mean of {seeds} seed{'s' * (seeds > 1)})\n"
            f"# slimctr train {self.data} --model {config.model_name} --config best.yaml\n"
        )
        with atomic_path(self.out / "best.yaml") as path:
            path.write_text(header + dump_yaml(to_dict(chosen)))

    def _plots(self, study: optuna.Study) -> dict[str, str]:
        """The plots Optuna draws with matplotlib (it warns that they are experimental)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.trial import TrialState
        from optuna.visualization import matplotlib as plots

        def auc(trial: optuna.trial.FrozenTrial) -> float:
            return float(trial.values[0])

        target = auc if self.multi else None  # one objective: Optuna's own
        drawn: dict[str, Callable[[], object]] = {
            "history.png": lambda: plots.plot_optimization_history(
                study, target=target, target_name="valid AUC"
            )
        }
        if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) >= 2:
            drawn["importance.png"] = lambda: plots.plot_param_importances(
                study, target=target, target_name="valid AUC"
            )
        if self.multi:
            names = ["valid AUC", "embedding bytes"]
            drawn["pareto.png"] = lambda: plots.plot_pareto_front(study, target_names=names)
        written = {}
        for name, draw in drawn.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    draw()
                except (ValueError, RuntimeError) as error:  # e.g. no setting varied
                    self.log.write(f"{name} not drawn: {error}\n")
                    continue
            figure = plt.gcf()  # the figure Optuna drew on
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            with atomic_path(self.out / name) as path:
                figure.savefig(path, format="png", dpi=100)
            plt.close(figure)
            written[name.removesuffix(".png")] = str(self.out / name)
        return written


def suggest(trial: optuna.Trial, param: Param) -> str:
    """The trial's value of ``param``, as the text of a ``--set`` override."""
    if isinstance(param, Float):
        return repr(trial.suggest_float(param.key, param.low, param.high, log=param.log))
    if isinstance(param, Int):
        return str(trial.suggest_int(param.key, param.low, param.high))
    if isinstance(param, Choice):
        return trial.suggest_categorical(param.key, param.labels)
    raise TypeError(f"unknown parameter {param!r}")


def settings_of(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's sampled settings by key, as they were set (numbers, lists)."""
    return {
        key: json.loads(value) if isinstance(value, str) else value
        for key, value in trial.params.items()
    }


def run_id(settings: Sequence[str]) -> str:
    """A folder name for one configuration: the same settings always get the same folder."""
    return hashlib.sha256("\n".join(sorted(settings)).encode()).hexdigest()[:16]
