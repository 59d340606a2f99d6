"""Optional-dependency checks with install hints, so commands fail with a clear message."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

EXTRAS = {
    "torch": "train",
    "torchvision": "train",
    "ultralytics": "train",
    "transformers": "train",
    "onnx": "convert",
    "onnxslim": "convert",
    "onnxruntime": "convert",
    "tensorrt": "trt",
    "scipy": "eval",
    "pandas": "eval",
    "pingouin": "eval",
    "sklearn": "eval",
    "matplotlib": "eval",
    "openpyxl": "eval",
    "ray": "ray",
    "pyarrow": "ray",
    "sqlalchemy": "central",
    "psycopg": "central",
}


class MissingDependencyError(ImportError):
    """An optional dependency needed by a command is not installed."""


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, what: str = "this command") -> ModuleType:
    """Import an optional dependency or raise an error naming the extra that provides it.

    Args:
        module: Top-level module name, e.g. ``"torch"``.
        what: What needs it, for the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra = EXTRAS.get(module)
        hint = f" Install it with: pip install 'grimace-edge[{extra}]'" if extra else ""
        raise MissingDependencyError(f"{what} needs {module!r}, which is not installed.{hint}") from e
