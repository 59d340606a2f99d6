"""grimace-edge runtime: automated grimace scale scoring without PyTorch.

This package needs only numpy, OpenCV and typer (plus onnxruntime or tensorrt at run time). It must
never import torch, ultralytics, ``train`` or ``convert``; a test enforces this.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
