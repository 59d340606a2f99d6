"""Two-stage teacher (the seed paper's aRGS): YOLO unit detector + one ViT grader per unit.

``load_teacher`` and ``Teacher`` are imported lazily so that importing :mod:`train.teacher.cli`
(for ``grimace --help``) does not pull in torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Teacher", "load_teacher", "train_teacher"]


def __getattr__(name: str) -> Any:
    if name in ("Teacher", "load_teacher"):
        from train.teacher import teacher

        return getattr(teacher, name)
    if name == "train_teacher":
        from train.teacher.training import train_teacher

        return train_teacher
    raise AttributeError(f"module 'train.teacher' has no attribute {name!r}")
