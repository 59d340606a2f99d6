"""Starting weights of the fused model: read tensors from a file, copy the ones that fit.

What ``--weights`` may name (:func:`resolve_weights`): ``auto`` (COCO ``yolov5{size}u.pt`` from
ultralytics when it can be had), a teacher run folder (its ``detector.safetensors``), a fused checkpoint
or training run folder (fine-tuning), a ``.safetensors`` file, a ``.pt`` file, or ``none``.

Loading never unpickles a file unless the caller says it trusts it (``trust_pickle``; ``--trust-pickle``
on the command line): ``.safetensors`` hold tensors only; a ``.pt`` is read with ``weights_only``
(tensors, plain containers) or, for ultralytics checkpoints, with ultralytics' restricted loader that
rebuilds only its own model classes. A file that needs anything else (a crafted pickle that would run a
command) is refused with :class:`UnsafeWeightsError` before anything in it runs.

Dependency direction: ``model`` (architecture) <- ``checkpoint`` (the weights-only format) <- ``weights``
<- ``trainer``.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from train.fused import ultra_compat
from train.fused.checkpoint import CONFIG, WEIGHTS, CheckpointError, checkpoint_dir, read_config

NO_WEIGHTS = ("", "none", "random")
TRUST_HINT = (
    "Use a .safetensors file (a teacher run's detector.safetensors, a fused checkpoint folder) or, only if "
    "you trust where the file came from, add --trust-pickle"
)


class UnsafeWeightsError(CheckpointError):
    """A weights file would have to be unpickled without restriction, and that was not allowed."""


def transfer_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """Copy every tensor of ``state`` whose name and shape match a tensor of ``model``.

    Returns:
        ``(copied, total)``: number of model tensors overwritten and number in the model.
    """
    own = model.state_dict()
    hits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    own.update({k: v.to(own[k].dtype) for k, v in hits.items()})
    model.load_state_dict(own)
    return len(hits), len(own)


def _refusal(path: Path, reason: str) -> UnsafeWeightsError:
    needs = [g for g in ultra_compat.checkpoint_globals(path) if not g.startswith(("torch.", "ultralytics."))]
    what = f" (it needs {', '.join(sorted(needs)[:5])})" if needs else ""
    return UnsafeWeightsError(
        f"{path}: refused to load: this .pt file is a pickle holding more than tensors and known "
        f"ultralytics model classes{what}; unpickling it could run any code it carries ({reason}). "
        f"{TRUST_HINT}."
    )


def read_state_dict(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """State dict from ``.safetensors``, a weights-only ``.pt``, or an ultralytics ``.pt`` checkpoint.

    Args:
        path: The file.
        trust_pickle: Allow unrestricted unpickling of a ``.pt`` (runs whatever code the file carries).

    Raises:
        UnsafeWeightsError: The file needs unrestricted unpickling and ``trust_pickle`` is False.
        CheckpointError: The file is not a readable state dict or checkpoint.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused a global
        if path.suffix != ".pt" and not trust_pickle:
            raise _refusal(path, f"weights-only load: {str(e).splitlines()[0]}") from None
        try:
            obj = ultra_compat.load_ultralytics_checkpoint(path, trust_pickle=trust_pickle)
        except ultra_compat.RestrictedLoadError as r:
            raise _refusal(path, str(r).splitlines()[0]) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch file ({type(e).__name__}: {e})") from None
    obj = ultra_compat.ultralytics_state_dict(obj)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict or ultralytics checkpoint")
    return obj


def _detector_names(path: Path) -> list[str] | None:
    """Class names stored beside a teacher detector (``detector.json``), if any."""
    meta = path.with_suffix(".json")
    if not meta.exists():
        return None
    try:
        names = json.loads(meta.read_text()).get("names")
    except (json.JSONDecodeError, AttributeError):
        return None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=int)]
    return list(names) if names else None


def fused_checkpoint_config(weights: str | Path | None) -> dict[str, Any] | None:
    """``config.json`` of a fused checkpoint (or student run folder, or its ``model.safetensors``).

    Returns:
        The config dict, or ``None`` when ``weights`` is not a fused checkpoint (``auto``, ``none``, a
        teacher run, a detector file).
    """
    if weights is None or str(weights).lower() in (*NO_WEIGHTS, "auto"):
        return None
    d = checkpoint_dir(weights)
    return read_config(d) if (d / CONFIG).exists() else None


def resolve_weights(weights: str | Path) -> Path:
    """The file a ``--weights`` path names (not ``auto``/``none``).

    Raises:
        FileNotFoundError: Nothing there, or a folder without weights.
    """
    path = Path(weights)
    if path.is_dir() and (path / "detector.safetensors").exists():  # a teacher run folder
        return path / "detector.safetensors"
    if path.is_dir() and (checkpoint_dir(path) / WEIGHTS).exists():
        return checkpoint_dir(path) / WEIGHTS  # a fused checkpoint or training run folder
    if not path.exists():
        raise FileNotFoundError(f"pretrained weights {path} do not exist")
    if path.is_dir():
        raise FileNotFoundError(
            f"{path}: a folder without weights (expected a teacher run, a fused checkpoint or "
            "training run folder, or a .safetensors/.pt file)"
        )
    return path


def load_pretrained(
    model: torch.nn.Module, weights: str | Path | None, size: str = "n", trust_pickle: bool = False
) -> str:
    """Load pretrained detector weights into the matching layers (shape-matched intersection).

    Args:
        model: The fused model (``model.names`` gives its unit order).
        weights: See the module docstring; ``None``/``"none"`` for random init.
        size: Model size, for the ``"auto"`` asset name.
        trust_pickle: Allow unrestricted unpickling of a ``.pt`` file.

    Returns:
        A one-line description of what was loaded (also warned when falling back to random init).

    Raises:
        UnsafeWeightsError: The file would need unrestricted unpickling and ``trust_pickle`` is False.
        FileNotFoundError: A path that does not exist.
    """
    if weights is None or str(weights).lower() in NO_WEIGHTS:
        return "random init (no pretrained weights requested)"
    if str(weights).lower() == "auto":
        name = f"yolov5{size.removeprefix('yolov5')}u.pt"
        if os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true"):
            msg = f"YOLO_OFFLINE is set: not downloading {name}; random init"
            warnings.warn(msg, stacklevel=2)
            return msg
        try:
            path = ultra_compat.download_asset(name)
        except Exception as e:  # offline or asset missing: never fail on the network
            msg = f"could not get COCO weights {name} ({type(e).__name__}: {e}); random init"
            warnings.warn(msg, stacklevel=2)
            return msg
    else:
        path = resolve_weights(weights)
    state = read_state_dict(path, trust_pickle=trust_pickle)
    names = _detector_names(path)
    if names is not None and names != [model.names.get(i) for i in range(len(model.names))]:
        # class order differs: keep the backbone/box branch, not the class-score convolutions
        head = len(model.model) - 1
        state = {k: v for k, v in state.items() if not k.startswith(f"model.{head}.cv3.")}
    copied, total = transfer_weights(model, state)
    return f"loaded {copied}/{total} tensors from {path}"
