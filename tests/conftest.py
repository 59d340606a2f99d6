"""Test configuration: offline, quiet ultralytics, no network.

Environment variables are set before any test module imports ultralytics/transformers, so nothing
tries to download weights, fonts or settings. A session fixture refuses every non-loopback socket
connection, so a test that would reach the network fails loudly instead of passing by luck.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

_TMP_CFG = Path(tempfile.mkdtemp(prefix="grimace-test-cfg-"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", str(_TMP_CFG))
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", str(_TMP_CFG / "hf"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "2")

_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: object) -> object:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and (
        host.startswith("127.") or host in ("localhost", "::1") or self.family == socket.AF_UNIX
    ):
        return _real_connect(self, address)
    raise RuntimeError(f"tests must be offline: attempted connection to {address!r}")


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> object:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
