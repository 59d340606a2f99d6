"""Weights-only checkpoints of the fused model.

A checkpoint is a **directory** holding

* ``model.safetensors`` — the model's state dict (tensors only; loading never unpickles anything);
* ``config.json`` — ``format`` (``"grimace-fused/1"``), ``scale`` (full scale spec), ``size``
  (``n``/``s``/``m``…), ``imgsz``, ``stride`` (list), ``nc``, ``ng``, ``grade_channels``, ``grade_hyp``
  (the model's :class:`~train.fused.config.GradeLossConfig`), ``metrics``, ``train_args`` and any other
  ``meta`` keys given to :func:`save_checkpoint`.

``load_checkpoint(path)`` rebuilds the architecture from ``scale`` + ``size`` and loads the tensors
strictly; it returns the model in eval mode with ``model.head.export = True``, so ``model(x)`` with
``x`` ``(B, 3, imgsz, imgsz)`` float in ``[0, 1]`` (RGB, letterboxed) returns the raw contract tensor
``(B, N, 4 + nc + nc*ng)`` alone. Set ``model.head.export = False`` to get ``(raw, prediction_dict)``.

ultralytics' own ``last.pt``/``best.pt`` (used only to resume training) pickle Python objects and are
for trusted local use only; they live under ``RUN_DIR/train/weights/``, apart from these checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from edge.scales import ScaleSpec, load_scale
from train.fused.config import GradeLossConfig
from train.fused.model import build_fused_model

FORMAT = "grimace-fused/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class CheckpointError(ValueError):
    """A fused checkpoint is missing, malformed or made for another scale."""


def save_checkpoint(model: torch.nn.Module, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write a weights-only checkpoint directory.

    Args:
        model: A :class:`~train.fused.model.GradeModel` (attributes ``scale_spec``, ``yaml['scale']``).
        path: Directory to write (created).
        meta: Extra JSON-serialisable keys (``metrics``, ``train_args``, ``imgsz``…).

    Returns:
        The directory.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    spec = getattr(model, "scale_spec", None) or meta.get("scale")
    if spec is None:
        raise CheckpointError("model has no scale_spec and meta has no 'scale'")
    spec = load_scale(spec)
    head = model.model[-1]
    state = {
        k: v.detach().float().contiguous().cpu() if v.is_floating_point() else v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(path / WEIGHTS))
    config = {
        **meta,
        "format": FORMAT,
        "scale": spec.to_dict(),
        "size": meta.get("size") or model.yaml.get("scale", "n"),
        "imgsz": int(meta.get("imgsz") or getattr(model, "imgsz", 640)),
        "stride": [float(s) for s in head.stride.tolist()],
        "nc": int(head.nc),
        "ng": int(head.ng),
        "grade_channels": int(head.grade_channels),
        "grade_hyp": getattr(model, "grade_config", GradeLossConfig()).to_dict(),
        "metrics": {k: _jsonable(v) for k, v in (meta.get("metrics") or {}).items()},
    }
    (path / CONFIG).write_text(json.dumps(_clean(config), indent=2, default=_jsonable))
    return path


def _clean(v: Any) -> Any:
    """Recursively make ``v`` strict JSON (NaN/inf -> null, numpy scalars -> float)."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (str, bool)) or v is None:
        return v
    if isinstance(v, int):
        return v
    return _jsonable(v)


def _jsonable(v: Any) -> Any:
    try:
        f = float(v)
        return f if f == f and abs(f) != float("inf") else None  # NaN/inf -> null
    except (TypeError, ValueError):
        return str(v)


def checkpoint_dir(path: str | Path) -> Path:
    """Resolve what a user passes as a checkpoint: its directory, its ``model.safetensors``, or a
    training run directory (``RUN`` -> ``RUN/best``)."""
    path = Path(path)
    d = path.parent if path.is_file() else path
    if not (d / CONFIG).exists() and (d / "best" / CONFIG).exists():
        return d / "best"
    return d


def read_config(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint (see :func:`checkpoint_dir` for what ``path`` may be)."""
    d = checkpoint_dir(path)
    cfg_path = d / CONFIG
    if not cfg_path.exists():
        raise CheckpointError(f"{d}: no {CONFIG} (is this a grimace fused checkpoint directory?)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: invalid JSON: {e}") from None
    if cfg.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: format {cfg.get('format')!r}, expected {FORMAT!r}")
    return cfg


def load_checkpoint(
    path: str | Path, expect_scale: ScaleSpec | str | None = None, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a weights-only checkpoint.

    Args:
        path: Checkpoint directory, its ``model.safetensors``, or a training run directory (its
            ``best`` checkpoint is used).
        expect_scale: If given, a different scale in the checkpoint raises ``ScaleMismatchError``.
        device: Where to put the model.

    Returns:
        ``(model, meta)``: the model in eval mode with ``head.export = True`` (``model(x)`` returns
        ``(B, N, 4 + nc + nc*ng)``), and the ``config.json`` dict (``meta["scale"]``, ``meta["imgsz"]``…).
    """
    from safetensors.torch import load_file

    d = checkpoint_dir(path)
    meta = read_config(d)
    spec = load_scale(meta["scale"])
    if expect_scale is not None:
        load_scale(expect_scale).check_compatible(spec, what=f"checkpoint {d}")
    wpath = d / WEIGHTS
    if not wpath.exists():
        raise CheckpointError(f"{d}: no {WEIGHTS}")
    # checkpoints from before the grade-branch width was a setting: no "grade_channels", default width
    model = build_fused_model(
        spec, meta.get("size", "n"), int(meta.get("imgsz", 640)), grade_channels=meta.get("grade_channels")
    )
    state = load_file(str(wpath))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{wpath}: weights do not fit a yolov5{meta.get('size')} fused model: {e}"
        ) from None
    try:  # saved without "grade_hyp" (possible before the dataclass): the defaults
        model.grade_config = GradeLossConfig.from_dict(meta.get("grade_hyp"))
    except ValueError as e:
        raise CheckpointError(f"{d / CONFIG}: {e}") from None
    model.to(device).eval()
    model.head.export = True
    return model, meta
