"""jetson/grimace-station.service: systemd-analyze verify (on a copy whose venv binaries exist here),
restart on failure, loopback by default, and its command line accepted by ``grimace station``."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "jetson" / "grimace-station.service"
VENV_BIN = "/opt/grimace/venv/bin/"


def _settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_station_unit_verifies(tmp_path: Path) -> None:
    text = (
        UNIT.read_text()
        .replace(VENV_BIN + "python", sys.executable)
        .replace(VENV_BIN + "grimace", sys.executable)
    )
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, cwd=tmp_path)
    ours = [ln for ln in (r.stdout + r.stderr).splitlines() if "grimace" in ln]
    assert r.returncode == 0 and not ours, r.stdout + r.stderr


def test_station_unit_contract_and_command_line(tmp_path: Path) -> None:
    s = _settings()
    assert s["Restart"] == ["on-failure"] and s["User"] == ["grimace"]
    env = dict(v.split("=", 1) for v in s["Environment"])
    assert env["GRIMACE_STATION_HOST"] == "127.0.0.1"
    # expand ExecStart as systemd does (${VAR} one word, $VAR split), with a data folder and a
    # non-loopback host: the station refuses to listen there before an admin password is set
    env.update(GRIMACE_STATION_DATA=str(tmp_path / "d"), GRIMACE_STATION_HOST="0.0.0.0")
    env["GRIMACE_MODEL"] = str(tmp_path / "m.onnx")
    env["GRIMACE_STATION_ARGS"] = "--chamber c1=0"
    words = []
    for w in shlex.split(s["ExecStart"][0]):
        if w.startswith("${") and w.endswith("}"):
            words.append(env[w[2:-1]])
        elif w.startswith("$"):
            words += env[w[1:]].split()
        else:
            words.append(w)
    assert words[0] == VENV_BIN + "grimace" and words[1] == "station"
    r = subprocess.run(
        [sys.executable, "-m", "edge.cli", *words[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "YOLO_OFFLINE": "1"},
    )
    assert r.returncode == 2 and "needs an admin password" in r.stderr, r.stderr
