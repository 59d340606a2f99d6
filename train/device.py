"""The one place a ``--device`` option becomes a torch device.

Every command that runs torch takes ``--device`` with the same vocabulary:

- ``auto`` (default): the first CUDA GPU when torch sees one, else Apple ``mps`` when available, else the CPU;
- ``cpu``; ``cuda`` (= ``cuda:0``) or ``cuda:N``; ``mps``;
- a bare index ``N`` (ultralytics' spelling) means ``cuda:N``.

A device that is asked for but not usable is a clear :class:`DeviceError` (no silent CPU fallback: a
user who typed ``cuda:1`` wants to know the GPU is not there). ``describe_device`` gives the dict every run
manifest records, and ``amp_enabled`` says whether mixed precision applies (CUDA only).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "Torch device: auto (CUDA if available, else MPS, else CPU), cpu, cuda, cuda:N or mps."
_SPEC = re.compile(r"^(auto|cpu|mps|cuda|cuda:\d+|\d+)$")


class DeviceError(ValueError):
    """A ``--device`` value that is malformed or names a device this machine does not have."""


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn a ``--device`` value into a usable :class:`torch.device` (torch is imported here, so the
    CLI modules can take :data:`DEVICE_HELP` from this module without loading torch).

    Args:
        spec: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``N`` or ``mps`` (case-insensitive); a
            ``torch.device`` passes through the same checks; ``None`` means ``auto``.

    Returns:
        The device. ``auto`` never fails (it falls back to the CPU).

    Raises:
        DeviceError: Malformed spec, CUDA asked for but not available, GPU index out of range, or MPS
            asked for but not available. The message says what torch sees.
    """
    import torch

    if isinstance(spec, torch.device):
        spec = str(spec)
    s = (spec or "auto").strip().lower()
    if not _SPEC.match(s):
        raise DeviceError(f"--device {spec!r}: expected auto, cpu, cuda, cuda:N, N or mps")
    if s == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda:0")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "mps":
        if not _mps_available():
            raise DeviceError("--device mps: this torch build or machine has no MPS (Apple GPU) support")
        return torch.device("mps")
    index = int(s.split(":")[1]) if ":" in s else (int(s) if s.isdigit() else 0)
    if not torch.cuda.is_available():
        raise DeviceError(
            f"--device {spec}: torch sees no CUDA GPU (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda or 'none'}); check the NVIDIA driver matches this torch build, "
            "or use --device cpu"
        )
    n = torch.cuda.device_count()
    if index >= n:
        raise DeviceError(f"--device {spec}: only {n} CUDA device(s) visible (cuda:0..cuda:{n - 1})")
    return torch.device(f"cuda:{index}")


def amp_enabled(device: torch.device) -> bool:
    """Whether automatic mixed precision (fp16 autocast + grad scaling) is used on ``device``."""
    return device.type == "cuda"


def ultralytics_device(device: torch.device) -> str:
    """The string ultralytics' ``device=`` argument expects for ``device`` (``cpu``, ``0``, ``mps``)."""
    if device.type == "cuda":
        return str(device.index or 0)
    return device.type


def describe_device(device: torch.device | str | None = None) -> dict[str, Any]:
    """What a run manifest records about the device it ran on.

    Args:
        device: The resolved device (or a spec, resolved here); ``None`` means ``auto``.

    Returns:
        ``{"device": "cuda:0", "type": "cuda", "name": "NVIDIA H200", "torch": "2.x", "cuda": "13.0",
        "amp": True}``; ``name`` is the GPU's name on CUDA, the processor kind otherwise.
    """
    import torch

    dev = device if isinstance(device, torch.device) else resolve_device(device)
    info: dict[str, Any] = {
        "device": str(dev),
        "type": dev.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "amp": amp_enabled(dev),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info["name"] = props.name
        info["memory_gib"] = round(props.total_memory / 2**30, 1)
        info["capability"] = f"{props.major}.{props.minor}"
    elif dev.type == "mps":
        info["name"] = "Apple MPS"
    else:
        import platform

        info["name"] = platform.processor() or platform.machine() or "cpu"
    return info
