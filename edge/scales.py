"""Grimace scale specifications.

A :class:`ScaleSpec` is the contract every artifact of grimace-edge carries: datasets, checkpoints,
ONNX files and TensorRT engines all name the scale they were made for, and loading one under another
scale is a :class:`ScaleMismatchError`, never silently wrong numbers.

A scale lists its action units in detector class order. Each unit has grade levels ``0..k-1``, a
maximum count per frame (RGS: 2 eyes, 2 ears, 1 nose, 1 whisker region) and a flag saying whether a
frame may be scored without it. The aggregation rule turns per-unit grades into a frame score:

* ``mean_of_unit_means`` (RGS, MGS): each unit's score is the mean grade of its selected instances,
  the frame score is the mean of the unit scores present.
* ``binary`` (goat face pain): the frame score is the probability of the highest grade ("pain") of
  the best instance of the single unit; a verdict is taken at ``pain_threshold``.

Built-in scales: ``rgs`` (rat), ``rgs-seed`` (the seed paper's aRGS detector order: ear, eye, nose),
``mgs`` (mouse) and ``goat`` (binary). User scales are read from YAML with :func:`load_scale`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

AGGREGATIONS = ("mean_of_unit_means", "binary")


class ScaleError(ValueError):
    """A scale specification is invalid."""


class ScaleMismatchError(ValueError):
    """Two artifacts were made for different scales."""


@dataclass(frozen=True)
class Unit:
    """One action unit (one detector class).

    Attributes:
        name: Short detector class name, e.g. ``"eye"``.
        label: Human name of the action unit, e.g. ``"Orbital Tightening"``.
        grades: Number of grade levels; grades are the integers ``0..grades-1``.
        per_frame: How many instances of this unit count in one frame (2 eyes, 1 nose).
        required: A frame without this unit is not scored (abstention).
        grade_names: Optional names of the grade levels (same length as ``grades``).
    """

    name: str
    label: str
    grades: int = 3
    per_frame: int = 1
    required: bool = True
    grade_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON/YAML safe)."""
        return {
            "name": self.name,
            "label": self.label,
            "grades": list(range(self.grades)),
            "per_frame": self.per_frame,
            "required": self.required,
            "grade_names": list(self.grade_names),
        }


@dataclass(frozen=True)
class ScaleSpec:
    """A grimace scale: units in detector class order, grade levels and the aggregation rule.

    Attributes:
        name: Scale identifier, e.g. ``"rgs"``.
        species: Animal the scale is for.
        units: Action units in detector class order.
        aggregation: One of :data:`AGGREGATIONS`.
        pain_threshold: Frame/animal score at or above which the verdict is "painful" (binary scales),
            or the analgesia intervention threshold for graded scales (informational).
        description: Free text.
        version: Version of this spec; changes to units or grades must change it.
    """

    name: str
    species: str
    units: tuple[Unit, ...]
    aggregation: str = "mean_of_unit_means"
    pain_threshold: float | None = None
    description: str = ""
    version: str = "1"
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"scale {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise ScaleError("scale needs a non-empty 'name'")
        if not self.units:
            raise ScaleError(f"{where}: no units given (need at least one action unit)")
        if self.aggregation not in AGGREGATIONS:
            raise ScaleError(
                f"{where}: unknown aggregation {self.aggregation!r}; expected one of {AGGREGATIONS}"
            )
        seen: set[str] = set()
        labels: set[str] = set()
        for u in self.units:
            if not u.name:
                raise ScaleError(f"{where}: a unit has an empty name")
            if u.name in seen:
                raise ScaleError(f"{where}: duplicate unit name {u.name!r}")
            seen.add(u.name)
            if u.label.lower() in labels:
                raise ScaleError(f"{where}: duplicate unit label {u.label!r} (labels name the table columns)")
            labels.add(u.label.lower())
            if u.grades < 1:
                raise ScaleError(f"{where}: unit {u.name!r} has an empty grade list")
            if u.per_frame < 1:
                raise ScaleError(f"{where}: unit {u.name!r} per_frame must be >= 1, got {u.per_frame}")
            if u.grade_names and len(u.grade_names) != u.grades:
                raise ScaleError(
                    f"{where}: unit {u.name!r} has {u.grades} grades but {len(u.grade_names)} grade_names"
                )
        if self.aggregation == "binary" and (len(self.units) != 1 or self.units[0].grades != 2):
            raise ScaleError(f"{where}: a binary scale needs exactly one unit with 2 grades")
        if not any(u.required for u in self.units):
            raise ScaleError(f"{where}: at least one unit must be required")
        self._index.update({u.name: i for i, u in enumerate(self.units)})

    # ----------------------------------------------------------------------------------- shape
    @property
    def nc(self) -> int:
        """Number of units (detector classes)."""
        return len(self.units)

    @property
    def ng(self) -> int:
        """Number of grade columns per unit in a fused model (the largest grade count)."""
        return max(u.grades for u in self.units)

    @property
    def score_name(self) -> str:
        """Name of the frame-score column and banner: the scale's family in capitals (``RGS`` for
        ``rgs`` and ``rgs-seed``, ``MGS``, ``GOAT``, ``RABBIT`` for a user scale named ``rabbit``)."""
        return self.name.split("-")[0].upper()

    @property
    def unit_names(self) -> list[str]:
        """Unit names in class order."""
        return [u.name for u in self.units]

    @property
    def grade_mask(self) -> np.ndarray:
        """Boolean mask of valid grade levels, shape ``(nc, ng)``."""
        mask = np.zeros((self.nc, self.ng), dtype=bool)
        for i, u in enumerate(self.units):
            mask[i, : u.grades] = True
        return mask

    @property
    def max_grade(self) -> np.ndarray:
        """Highest grade value per unit, shape ``(nc,)``."""
        return np.array([u.grades - 1 for u in self.units], dtype=np.float32)

    def unit_index(self, name: str) -> int:
        """Class index of a unit by name.

        Raises:
            ScaleError: If the unit is not part of this scale.
        """
        try:
            return self._index[name]
        except KeyError:
            raise ScaleError(
                f"scale {self.name!r}: unknown unit {name!r}; known units: {self.unit_names}"
            ) from None

    def unit(self, key: str | int) -> Unit:
        """A unit by name or class index."""
        if isinstance(key, str):
            return self.units[self.unit_index(key)]
        if not 0 <= key < self.nc:
            raise ScaleError(f"scale {self.name!r}: unit index {key} out of range 0..{self.nc - 1}")
        return self.units[key]

    # ------------------------------------------------------------------------ derived scales
    def reordered(self, names: list[str], name: str | None = None) -> ScaleSpec:
        """The same scale with units in another class order (and possibly a subset).

        Used to express detectors trained with another class order, e.g. the seed's aRGS detector
        (``0 ear, 1 eye, 2 nose``): ``RGS.reordered(["ear", "eye", "nose"])``.
        """
        units = tuple(self.unit(n) for n in names)
        return ScaleSpec(
            name=name or f"{self.name}[{','.join(names)}]",
            species=self.species,
            units=units,
            aggregation=self.aggregation,
            pain_threshold=self.pain_threshold,
            description=self.description,
            version=self.version,
        )

    # -------------------------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        """Plain-data form; :meth:`from_dict` inverts it."""
        return {
            "name": self.name,
            "species": self.species,
            "version": self.version,
            "aggregation": self.aggregation,
            "pain_threshold": self.pain_threshold,
            "description": self.description,
            "units": [u.to_dict() for u in self.units],
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def fingerprint(self) -> str:
        """Short hash of everything that changes the meaning of model outputs."""
        core = {
            "units": [(u.name, u.grades) for u in self.units],
            "aggregation": self.aggregation,
        }
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> ScaleSpec:
        """Build and validate a spec from plain data.

        Args:
            data: Mapping as written by :meth:`to_dict` or a user YAML file.
            source: Where the data came from, used in error messages.

        Raises:
            ScaleError: On any missing or invalid field.
        """
        if not isinstance(data, dict):
            raise ScaleError(f"{source}: a scale must be a mapping, got {type(data).__name__}")
        _refuse_unknown_keys(data, SCALE_KEYS, source, "scale")
        for key in ("name", "units"):
            if key not in data:
                raise ScaleError(f"{source}: missing required field {key!r}")
        raw_units = data["units"]
        if not isinstance(raw_units, list):
            raise ScaleError(f"{source}: 'units' must be a list")
        units = []
        for i, ru in enumerate(raw_units):
            if not isinstance(ru, dict) or "name" not in ru:
                raise ScaleError(f"{source}: unit #{i} must be a mapping with a 'name'")
            _refuse_unknown_keys(ru, UNIT_KEYS, source, f"unit {ru['name']!r}")
            grades = ru.get("grades", 3)
            if isinstance(grades, list):
                if grades and grades != list(range(len(grades))):
                    raise ScaleError(
                        f"{source}: unit {ru['name']!r} grades must be 0..k-1 in order, got {grades}"
                    )
                n_grades = len(grades)
            elif isinstance(grades, int):
                n_grades = grades
            else:
                raise ScaleError(f"{source}: unit {ru['name']!r} 'grades' must be a list or int")
            try:
                units.append(
                    Unit(
                        name=str(ru["name"]),
                        label=str(ru.get("label", ru["name"])),
                        grades=n_grades,
                        per_frame=int(ru.get("per_frame", 1)),
                        required=bool(ru.get("required", True)),
                        grade_names=tuple(str(g) for g in ru.get("grade_names", ()) or ()),
                    )
                )
            except (TypeError, ValueError) as e:
                raise ScaleError(f"{source}: unit {ru['name']!r}: {e}") from None
        spec = ScaleSpec(
            name=str(data["name"]),
            species=str(data.get("species", "")),
            units=tuple(units),
            aggregation=str(data.get("aggregation", "mean_of_unit_means")),
            pain_threshold=(None if data.get("pain_threshold") is None else float(data["pain_threshold"])),
            description=str(data.get("description", "")),
            version=str(data.get("version", "1")),
        )
        order = data.get("class_order")
        if order is not None:
            spec = spec.reordered(list(order), name=spec.name)
        required = data.get("required")
        if required is not None:
            known = set(spec.unit_names)
            for r in required:
                if r not in known:
                    raise ScaleError(
                        f"{source}: 'required' names unknown unit {r!r}; known units: {spec.unit_names}"
                    )
            units_req = tuple(replace(u, required=u.name in set(required)) for u in spec.units)
            try:
                spec = replace(spec, units=units_req)
            except ScaleError as e:
                raise ScaleError(f"{source}: {e}") from None
        return spec

    def check_compatible(self, other: ScaleSpec | dict[str, Any], what: str = "artifact") -> None:
        """Raise :class:`ScaleMismatchError` unless ``other`` has the same units, order and grades.

        Args:
            other: The scale an artifact says it was made for.
            what: Name of that artifact, for the message (e.g. a file path).
        """
        if isinstance(other, dict):
            other = ScaleSpec.from_dict(other, source=what)
        if self.fingerprint != other.fingerprint:
            mine = [(u.name, u.grades) for u in self.units]
            theirs = [(u.name, u.grades) for u in other.units]
            raise ScaleMismatchError(
                f"{what} was made for scale {other.name!r} (units/grades {theirs}, "
                f"aggregation {other.aggregation}) but scale {self.name!r} (units/grades {mine}, "
                f"aggregation {self.aggregation}) was requested"
            )


def _u(name: str, label: str, grades: int = 3, per_frame: int = 1, required: bool = True) -> Unit:
    names = ("absent", "moderate", "obvious") if grades == 3 else ()
    return Unit(name, label, grades, per_frame, required, names)


RGS = ScaleSpec(
    name="rgs",
    species="rat",
    units=(
        _u("eye", "Orbital Tightening", per_frame=2),
        _u("ear", "Ear Changes", per_frame=2),
        _u("nose", "Nose Flattening", per_frame=1),
        _u("whiskers", "Whisker Change", per_frame=1, required=False),
    ),
    pain_threshold=0.67,
    description="Rat Grimace Scale (Sotocinal et al. 2011): 4 action units graded 0-2; "
    "frame score = mean of the unit means.",
)

RGS_SEED = RGS.reordered(["ear", "eye", "nose"], name="rgs-seed")
"""The seed paper's aRGS detector: classes 0 ear, 1 eye, 2 nose (no whiskers)."""

MGS = ScaleSpec(
    name="mgs",
    species="mouse",
    units=(
        _u("eye", "Orbital Tightening", per_frame=2),
        _u("nose", "Nose Bulge", per_frame=1),
        _u("cheek", "Cheek Bulge", per_frame=2, required=False),
        _u("ear", "Ear Position", per_frame=2),
        _u("whiskers", "Whisker Change", per_frame=1, required=False),
    ),
    description="Mouse Grimace Scale (Langford et al. 2010): 5 action units graded 0-2.",
)

GOAT = ScaleSpec(
    name="goat",
    species="goat",
    units=(Unit("face", "Face", grades=2, per_frame=1, required=True, grade_names=("no pain", "pain")),),
    aggregation="binary",
    pain_threshold=0.5,
    description="Goat facial pain, binary (pain / no pain) per frame, as in the goat video seed.",
)

SCALE_KEYS = frozenset(
    {
        "name",
        "species",
        "version",
        "aggregation",
        "pain_threshold",
        "description",
        "units",
        "class_order",
        "required",
    }
)
"""Keys a scale mapping may have (a typo such as ``unitz`` is refused, not ignored)."""
UNIT_KEYS = frozenset({"name", "label", "grades", "per_frame", "required", "grade_names"})
"""Keys a unit mapping may have (``grades_x`` is refused, not silently replaced by 3 grades)."""


def _refuse_unknown_keys(data: dict[str, Any], known: frozenset[str], source: str, what: str) -> None:
    """Raise :class:`ScaleError` naming each unknown key (and the known key it resembles)."""
    import difflib

    unknown = [str(k) for k in data if str(k) not in known]
    if not unknown:
        return
    parts = []
    for k in unknown:
        close = difflib.get_close_matches(k, sorted(known), n=1)
        parts.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ScaleError(f"{source}: {what}: unknown key(s) {', '.join(parts)}; known keys: {sorted(known)}")


BUILTIN_SCALES: dict[str, ScaleSpec] = {s.name: s for s in (RGS, RGS_SEED, MGS, GOAT)}


def load_scale(name_or_path: str | Path | ScaleSpec | dict[str, Any]) -> ScaleSpec:
    """Resolve a scale from a built-in name, a YAML/JSON file path, a dict or a spec.

    Raises:
        ScaleError: Unknown name, unreadable file or invalid content (the message names the file).
    """
    if isinstance(name_or_path, ScaleSpec):
        return name_or_path
    if isinstance(name_or_path, dict):
        return ScaleSpec.from_dict(name_or_path)
    key = str(name_or_path)
    if key.lower() in BUILTIN_SCALES:
        return BUILTIN_SCALES[key.lower()]
    path = Path(key)
    if not path.exists():
        raise ScaleError(
            f"unknown scale {key!r}: not a built-in ({', '.join(BUILTIN_SCALES)}) and no such file"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ScaleError(f"{path}: cannot read scale file: {e}") from None
    return ScaleSpec.from_dict(data, source=str(path))
