"""Typed settings of the grade task (no torch, no ultralytics: the CLI builds and checks them cheaply).

:class:`GradeLossConfig` replaces the string-keyed ``grade_hyp`` dict that used to travel from the CLI
through the trainer and the model to the loss. It is stored in checkpoints (``config.json``) and in
ultralytics' resumable ``last.pt`` under the same ``grade_hyp`` keys as before, so checkpoints written
before the dataclass existed still load (:meth:`GradeLossConfig.from_dict`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

# stored key (config.json / last.pt) -> field name
_STORED = {"grade_ce": "ce", "grade_kd": "kd", "grade_T": "temperature", "grade_cls_pw": "cls_pw"}


@dataclass(frozen=True)
class GradeLossConfig:
    """Weights and temperature of the grade loss.

    Attributes:
        ce: Weight of the cross-entropy to human grades (``>= 0``).
        kd: Weight of the KL divergence to the teacher's soft grades (``>= 0``).
        temperature: Distillation temperature ``T`` (``> 0``; the KL term is multiplied by ``T**2``).
        cls_pw: Class-imbalance weight power: ``w[u, g] ∝ count[u, g] ** -cls_pw`` (``0`` disables).

    Raises:
        ValueError: A value that is not finite or out of its range (the message names the option).
    """

    ce: float = 1.0
    kd: float = 1.0
    temperature: float = 2.0
    cls_pw: float = 0.5

    def __post_init__(self) -> None:
        checks = {
            "ce": ("--grade-ce", lambda v: v >= 0, ">= 0"),
            "kd": ("--grade-kd", lambda v: v >= 0, ">= 0"),
            "temperature": ("--temperature", lambda v: v > 0, "> 0"),
            "cls_pw": ("--grade-cls-pw", lambda v: v >= 0, ">= 0"),
        }
        for name, (option, ok, rule) in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{option}: expected a number, got {value!r}")
            if not math.isfinite(value) or not ok(value):
                raise ValueError(f"{option} must be finite and {rule}, got {value}")
            object.__setattr__(self, name, float(value))

    def to_dict(self) -> dict[str, float]:
        """The stored form, keys as before the dataclass: ``grade_ce grade_kd grade_T grade_cls_pw``."""
        values = asdict(self)
        return {key: values[name] for key, name in _STORED.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> GradeLossConfig:
        """Read the stored form (missing keys take the defaults; ``None`` gives the defaults).

        Raises:
            ValueError: Unknown keys (a typo would otherwise be ignored silently) or bad values.
        """
        d = dict(d or {})
        unknown = sorted(set(d) - set(_STORED))
        if unknown:
            raise ValueError(f"grade_hyp: unknown keys {unknown}; expected some of {sorted(_STORED)}")
        return cls(**{_STORED[k]: v for k, v in d.items()})
