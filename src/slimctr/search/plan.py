"""The result every dimension search leaves: a ``Plan``.

A plan gives each field (schema order) a width d_f and, for methods that prune feature values,
the rows it keeps, or for methods that prune single entries (PEP), a mask of the entries each
categorical table keeps; it records how it was found (the method and its settings, the source
run) and its honest size (dimension-search spec 1.4):

    kept_f            rows kept of field f (all n_f unless the plan prunes rows)
    embedding_params  Σ_f kept_f d_f: the floats of the tables that are stored (a masked
                      field: its kept entries; a grouped plan: every group's tables and the
                      router's, Σ_g Σ_f n_f d_gf + Σ_f r_f router_dim, r_f the router's rows)
    index_bytes       ceil(n_f / 8) for each field with pruned rows: the map from a feature id
                      to its kept row, a bit per id as a bundle stores it (``slimctr.nn.pruned``;
                      a pruned id reaches the field's zero row), and for masked tables one bit
                      per entry (``slimctr.nn.masked``): decoding metadata
    embedding_bytes   4 embedding_params + index_bytes (float32 tables)
    feature_ratio     Σ kept_f / Σ n_f, the share of feature values kept (OptFS's "feature ratio")
    d_bar, k_bar      FDO's sizes: Σ d_f n_f / Σ n_f and Σ d_f / F (GDCN spec 4)

A plan is saved as JSON; the kept ids and masks, which can be millions, go to a safetensors file
beside it (``<name>.kept.safetensors``; a mask under ``mask/<field>``) whose SHA-256 the JSON
records.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from slimctr.config import from_dict, to_dict
from slimctr.errors import SlimctrError
from slimctr.files import atomic_path, sha256_bytes, write_json
from slimctr.schema import Schema

Setting = int | float | str | bool | None  # a value of a plan's settings
FLOAT_BYTES = 4  # the tables are stored in float32
MASK = "mask/"  # the prefix of a mask's name in the sidecar file
# Sizes written for readers and checked against the plan when read back.
_DERIVED = (
    "kept_rows",
    "embedding_params",
    "index_bytes",
    "embedding_bytes",
    "feature_ratio",
    "d_bar",
    "k_bar",
)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Plan:
    """Per-field widths, and the kept rows where a method prunes them, with their provenance.

    ``method`` names what made the plan (a searcher of ``SEARCHERS``, or the ``formula`` and
    ``uniform`` baselines) and ``settings`` its configuration. ``field_sizes`` are the table
    rows n_f (PAD and OOV included; 1 for a numeric field's vector). ``kept`` maps a field whose
    rows are pruned to the sorted ids it keeps; fields not in it keep every row. ``masks`` maps
    a field to the boolean (n_f, d_f) mask of the entries it keeps; a plan masks every
    categorical field or none, and prunes rows or masks, not both. ``groups`` (an
    instance-wise search's result) gives each group model its widths, behind a router of the
    settings ``router`` (``slimctr.models.routed``) whose table keeps ``router_rows`` of each
    field it names (all rows of the others); ``widths`` are then the widest group's.
    ``model_params`` counts the parameters of the source model's architecture with the plan
    applied, when known; ``seconds`` the wall time of each stage that found it (the search's
    cost; ``same_as`` ignores it).
    """

    method: str
    widths: dict[str, int]
    field_sizes: dict[str, int]
    settings: dict[str, Setting] = dataclasses.field(default_factory=dict)
    kept: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    masks: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    groups: tuple[dict[str, int], ...] = ()
    router: dict[str, int] | None = None
    router_rows: dict[str, int] = dataclasses.field(default_factory=dict)
    source_run: str | None = None
    source_widths: dict[str, int] | None = None
    model_params: int | None = None
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not self.method:
            raise SlimctrError(f"a plan's method must be a name, got {self.method!r}")
        if not self.field_sizes:
            raise SlimctrError("a plan needs at least one field")
        for key in ("widths", "field_sizes", "source_widths"):
            values = getattr(self, key)
            if values is not None:
                check_fields(f"the plan's {key} and field_sizes differ", self.field_sizes, values)
                _check_counts(key, values)
        object.__setattr__(self, "widths", {n: self.widths[n] for n in self.field_sizes})
        object.__setattr__(self, "kept", _checked_kept(self.kept, self.field_sizes))
        object.__setattr__(
            self, "masks", _checked_masks(self.masks, self.field_sizes, self.widths, self.kept)
        )
        object.__setattr__(self, "groups", tuple(self.groups))
        for group in self.groups:
            check_fields("a group's widths and field_sizes differ", self.field_sizes, group)
            _check_counts("group widths", group)
        if bool(self.groups) != (self.router is not None):
            raise SlimctrError("a plan with groups needs its router's settings, and only it")
        if self.groups and (self.kept or self.masks):
            raise SlimctrError("a plan with groups neither prunes rows nor masks entries")
        if self.router is not None:
            _check_counts("router", self.router)
            if "router_dim" not in self.router:
                raise SlimctrError("a plan's router settings must give router_dim")
        if self.router_rows and not self.groups:
            raise SlimctrError("only a plan with groups has router_rows")
        _check_counts("router_rows", self.router_rows)
        unknown = [name for name in self.router_rows if name not in self.field_sizes]
        if unknown:
            raise SlimctrError(f"the plan's router_rows name an unknown field: {unknown[0]}")
        for name, rows in self.router_rows.items():
            if rows > self.field_sizes[name]:
                raise SlimctrError(f"the plan's router_rows of {name!r} exceed the field's rows")
        if self.model_params is not None and not is_count(self.model_params):
            raise SlimctrError(
                f"model_params must be an int >= 1 or null, got {self.model_params!r}"
            )

    # -- sizes ---------------------------------------------------------------------------------

    @property
    def kept_rows(self) -> dict[str, int]:
        """kept_f: the rows each field keeps."""
        return {n: len(self.kept[n]) if n in self.kept else s for n, s in self.field_sizes.items()}

    @property
    def kept_entries(self) -> dict[str, int]:
        """The entries each masked field keeps."""
        return {n: int(mask.sum()) for n, mask in self.masks.items()}

    @property
    def embedding_params(self) -> int:
        """Σ kept_f d_f: the floats of the stored tables (numeric vectors included; a masked
        field's kept entries)."""
        entries = self.kept_entries
        if self.groups:
            assert self.router is not None
            sizes = self.field_sizes.items()
            groups = sum(group[n] * rows for group in self.groups for n, rows in sizes)
            router = {n: self.router_rows.get(n, rows) for n, rows in sizes}
            return groups + self.router["router_dim"] * sum(router.values())
        return sum(
            entries[n] if n in entries else self.widths[n] * rows
            for n, rows in self.kept_rows.items()
        )

    @property
    def index_bytes(self) -> int:
        """The id-to-row maps of the fields with pruned rows (a bit per id, each field on
        whole bytes), and a bit per entry of the masked tables."""
        bits = sum(mask.size for mask in self.masks.values())
        maps = sum(math.ceil(self.field_sizes[n] / 8) for n in self.kept)
        return maps + math.ceil(bits / 8)

    @property
    def embedding_bytes(self) -> int:
        """The bytes stored: float32 tables and their decoding metadata."""
        return FLOAT_BYTES * self.embedding_params + self.index_bytes

    @property
    def feature_ratio(self) -> float:
        """Σ kept_f / Σ n_f: the share of feature values kept."""
        return sum(self.kept_rows.values()) / sum(self.field_sizes.values())

    @property
    def d_bar(self) -> float:
        """D̄ = Σ d_f n_f / Σ n_f, the mean width weighted by table rows (pruning aside)."""
        weighted = sum(self.widths[n] * size for n, size in self.field_sizes.items())
        return weighted / sum(self.field_sizes.values())

    @property
    def k_bar(self) -> float:
        """K̄ = Σ d_f / F, the mean width over fields (D = F K̄)."""
        return sum(self.widths.values()) / len(self.widths)

    # -- data ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: the plan (without the kept ids and masks), then its sizes."""
        data = to_dict(dataclasses.replace(self, kept={}, masks={}))
        del data["kept"], data["masks"]
        return data | {key: getattr(self, key) for key in _DERIVED}

    @classmethod
    def from_dict(
        cls,
        data: Any,
        kept: Mapping[str, np.ndarray] | None = None,
        masks: Mapping[str, np.ndarray] | None = None,
    ) -> Plan:
        """The plan in ``data`` with the kept ids ``kept`` and the ``masks``. Unknown or missing
        keys are errors, and so are sizes (optional) that disagree with the plan."""
        if not isinstance(data, Mapping):
            raise SlimctrError(f"a plan must be a JSON object, got {type(data).__name__}")
        if "kept" in data or "masks" in data:
            raise SlimctrError("a plan's kept ids and masks are stored beside it, not in it")
        fields = {k: v for k, v in data.items() if k not in (*_DERIVED, "kept_ids")}
        plan = from_dict(cls, fields)
        plan = dataclasses.replace(plan, kept=dict(kept or {}), masks=dict(masks or {}))
        for key in (k for k in _DERIVED if k in data):
            if not _agrees(data[key], getattr(plan, key)):
                raise SlimctrError(
                    f"the plan's {key} {data[key]!r} disagrees with the plan ({getattr(plan, key)})"
                )
        return plan

    def save(self, path: Path) -> None:
        """Write the plan as JSON at ``path``, atomically, and its kept ids beside it."""
        path = Path(path)
        data = self.to_dict()
        if self.kept or self.masks:
            sidecar = kept_ids_path(path)
            tensors = {n: torch.from_numpy(ids) for n, ids in self.kept.items()}
            tensors |= {f"{MASK}{n}": torch.from_numpy(m) for n, m in self.masks.items()}
            content = save_safetensors(tensors)
            with atomic_path(sidecar) as staged:
                staged.write_bytes(content)
            data["kept_ids"] = {"file": sidecar.name, "sha256": sha256_bytes(content)}
        write_json(path, data)

    @classmethod
    def load(cls, path: Path) -> Plan:
        """The plan saved at ``path``; a damaged or missing kept-ids file is an error."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            stored = _read_kept(path, data.get("kept_ids") if isinstance(data, dict) else None)
            kept = {n: t for n, t in stored.items() if not n.startswith(MASK)}
            masks = {n[len(MASK) :]: t for n, t in stored.items() if n.startswith(MASK)}
            return cls.from_dict(data, kept, masks)
        except FileNotFoundError as error:
            raise SlimctrError(f"plan file not found: {error.filename}") from None
        except json.JSONDecodeError as error:
            raise SlimctrError(
                f"plan {path} is not valid JSON (line {error.lineno}: {error.msg})"
            ) from None
        except (OSError, UnicodeDecodeError, SlimctrError) as error:
            raise SlimctrError(f"plan {path}: {error}") from None

    def check_schema(self, schema: Schema) -> None:
        """Raise unless the plan names exactly the schema's fields, and each field whose rows it
        prunes or entries it masks has the table size it was planned for."""
        expected = [f.name for f in schema.fields]
        check_fields("the plan does not fit the data's fields", expected, self.widths)
        sizes = field_sizes(schema)  # widths fit other sizes; kept ids and masks only their own
        wrong = [n for n in [*self.kept, *self.masks] if sizes[n] != self.field_sizes[n]]
        if wrong:
            name = wrong[0]
            raise SlimctrError(
                f"the plan does not fit the data: field {name!r} has {sizes[name]} rows in the "
                f"data and {self.field_sizes[name]} in the plan"
            )

    def same_as(self, other: Plan) -> bool:
        """Equal settings, widths, sizes, kept ids and masks (however long each took to find)."""
        untimed = [dataclasses.replace(plan, seconds={}).to_dict() for plan in (self, other)]
        return (
            untimed[0] == untimed[1]
            and self.kept.keys() == other.kept.keys()
            and all(np.array_equal(ids, other.kept[n]) for n, ids in self.kept.items())
            and self.masks.keys() == other.masks.keys()
            and all(np.array_equal(mask, other.masks[n]) for n, mask in self.masks.items())
        )


def field_sizes(schema: Schema) -> dict[str, int]:
    """n_f: a categorical field's table rows (PAD and OOV included); 1 for a numeric field."""
    return {f.name: f.vocab_size if f.kind == "categorical" else 1 for f in schema.fields}


def model_schema(plan: Plan, schema: Schema) -> Schema:
    """The schema a model with ``plan`` applied is built from: its pruned fields' kept rows and
    its masked fields' kept entries."""
    return schema.with_kept_rows(plan_rows(plan.kept)).with_kept_entries(plan.kept_entries)


def plan_rows(kept: Mapping[str, np.ndarray]) -> dict[str, int]:
    """The rows each pruned field keeps: the ``kept_rows`` of a pruned model's schema."""
    return {name: len(ids) for name, ids in kept.items()}


def kept_ids_path(path: Path) -> Path:
    """Where the kept ids of the plan saved at ``path`` go."""
    return path.with_name(f"{path.stem}.kept.safetensors")


def check_fields(what: str, expected: Iterable[str], given: Iterable[str]) -> None:
    """Raise, naming the missing and the unknown fields, unless ``given`` has the ``expected``."""
    expected, given = list(expected), list(given)
    missing = [n for n in expected if n not in given]
    unknown = [n for n in given if n not in expected]
    if missing or unknown:
        listed = [", ".join(names) or "none" for names in (missing, unknown)]
        raise SlimctrError(f"{what}: missing {listed[0]}; unknown {listed[1]}")


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# -- internals -------------------------------------------------------------------------------


def _check_counts(key: str, values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        if not is_count(value):
            raise SlimctrError(f"the plan's {key} of {name!r} must be an int >= 1, got {value!r}")


def _checked_kept(kept: Any, sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """``kept`` as int64 arrays in schema order, each sorted, unique, within its table and not
    empty (a field keeps at least one row)."""
    if not isinstance(kept, Mapping):
        raise SlimctrError(f"a plan's kept rows must map fields to ids, got {type(kept).__name__}")
    check_fields("the plan's kept rows name fields it does not have", sizes, [*sizes, *kept])
    checked = {}
    for name in (n for n in sizes if n in kept):
        ids = np.asarray(kept[name])
        if ids.ndim != 1 or not len(ids) or not np.issubdtype(ids.dtype, np.integer):
            raise SlimctrError(f"field {name!r}: kept rows must be a non-empty list of ids")
        ids = ids.astype(np.int64)
        if ids[0] < 0 or ids[-1] >= sizes[name] or not np.all(ids[1:] > ids[:-1]):
            raise SlimctrError(
                f"field {name!r}: kept rows must be increasing ids in [0, {sizes[name]})"
            )
        checked[name] = ids
    return checked


def _checked_masks(
    masks: Any,
    sizes: Mapping[str, int],
    widths: Mapping[str, int],
    kept: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """``masks`` as boolean arrays in schema order, each of its field's (n_f, d_f)."""
    if not isinstance(masks, Mapping):
        raise SlimctrError(f"a plan's masks must map fields to arrays, got {type(masks).__name__}")
    check_fields("the plan's masks name fields it does not have", widths, [*widths, *masks])
    if masks and kept:
        raise SlimctrError("a plan prunes rows or masks entries, not both")
    checked = {}
    for name in (n for n in widths if n in masks):
        mask = np.asarray(masks[name])
        if mask.dtype != np.bool_ or mask.shape != (sizes[name], widths[name]):
            raise SlimctrError(
                f"field {name!r}: a mask must be a boolean ({sizes[name]}, {widths[name]}) array"
            )
        checked[name] = mask
    return checked


def _read_kept(path: Path, record: Any) -> dict[str, np.ndarray]:
    """The kept ids named by a plan file's ``kept_ids`` record (none when it has none)."""
    if record is None:
        return {}
    if not isinstance(record, Mapping) or set(record) != {"file", "sha256"}:
        raise SlimctrError("kept_ids must be an object with the keys file and sha256")
    sidecar = path.with_name(str(record["file"]))
    content = sidecar.read_bytes()
    if sha256_bytes(content) != record["sha256"]:
        raise SlimctrError(f"{sidecar.name} is damaged: its checksum differs from the plan's")
    try:
        return {n: t.numpy() for n, t in load_safetensors(content).items()}
    except SafetensorError as error:
        raise SlimctrError(f"{sidecar.name} is not a safetensors file ({error})") from None


def _agrees(value: Any, expected: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(value, dict) and value == expected
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isclose(value, expected, rel_tol=1e-9)
    )
