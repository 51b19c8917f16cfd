"""Named configurations shipped inside the package: settings that were tuned once, to reuse.

``configs/<name>/<model>.yaml`` is a config file for ``train --config`` (only what differs from
the defaults); ``configs/index.yaml`` says where each set comes from and what each model reached
with it, mean test AUC over the seeds logged in the study named there. A test recomputes those
numbers from the study's committed run log, so the index cannot drift from the runs.

    slimctr configs                                   # the sets, their models and AUC
    slimctr train DATA --model dcnv2 --config frappe_x1

A ``--config`` that names an existing file is that file; otherwise it is looked up here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimctr.config import load_yaml
from slimctr.errors import SlimctrError

CONFIGS = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class ShippedConfig:
    name: str
    description: str
    study: str  # the script and run log the numbers come from
    test_auc: dict[str, dict[str, Any]]  # model -> {"mean": AUC, "seeds": count}

    def path(self, model: str) -> Path:
        return CONFIGS / self.name / f"{model}.yaml"

    @property
    def models(self) -> list[str]:
        return sorted(p.stem for p in (CONFIGS / self.name).glob("*.yaml"))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "study": self.study,
            "models": {m: self.test_auc.get(m) for m in self.models},
        }


def shipped_configs() -> dict[str, ShippedConfig]:
    """Every shipped set, by name, as ``configs/index.yaml`` describes it."""
    index = load_yaml(CONFIGS / "index.yaml")
    return {
        name: ShippedConfig(name, entry["description"], entry["study"], entry.get("test_auc", {}))
        for name, entry in index.items()
    }


def config_path(config: str | Path, model: str) -> Path:
    """The YAML file that ``--config config`` means for ``model``: a file there, or the model's
    file in the shipped set of that name."""
    path = Path(config)
    if path.is_file():
        return path
    shipped = shipped_configs()
    if str(config) not in shipped:
        names = ", ".join(sorted(shipped))
        raise SlimctrError(
            f"config file not found: {config} (nor a shipped config; those are: {names})"
        )
    found = shipped[str(config)]
    if model not in found.models:
        raise SlimctrError(
            f"the shipped config {found.name!r} has no settings for model {model!r} "
            f"(it has: {', '.join(found.models)})"
        )
    return found.path(model)
