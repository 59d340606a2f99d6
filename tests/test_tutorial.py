"""docs/your-own-animals.md cannot rot: its commands exist with the options it shows, and the tiny-scale
script that follows it (tests/tutorial/your_own_animals.sh) runs end to end."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "your-own-animals.md"
SCRIPT = REPO / "tests" / "tutorial" / "your_own_animals.sh"
NOT_IN_SCRIPT = {("teacher", "import-seed")}  # needs the seed's released files (tests/test_teacher.py)


def _page_commands() -> list[list[str]]:
    """Every ``grimace ...`` command of the page's bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    cmds = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("grimace "):
                cmds.append(shlex.split(line)[1:])
    inline = re.findall(r"`(grimace [^`]+)`", PAGE.read_text(encoding="utf-8"))
    cmds += [shlex.split(c)[1:] for c in inline if " --" in c]
    return cmds


def _command_path(argv: list[str]) -> tuple[str, ...]:
    """The command words (``("data", "import-cvat")``) before the first argument or option."""
    from typer.main import get_command

    from edge.cli import app

    cmd, path = get_command(app), []
    for word in argv:
        sub = getattr(cmd, "commands", {}).get(word)
        if sub is None:
            break
        cmd, path = sub, [*path, word]
    return tuple(path)


def test_every_command_on_the_page_exists_with_its_options() -> None:
    from typer.testing import CliRunner

    from edge.cli import app

    cmds = _page_commands()
    assert len(cmds) >= 12
    for argv in cmds:
        path = _command_path(argv)
        assert path, f"not a grimace command: {argv}"
        r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "250"})
        assert r.exit_code == 0, (path, r.output)
        for opt in (a.split("=", 1)[0] for a in argv if a.startswith("--")):
            assert re.search(rf"{re.escape(opt)}\b", r.output), f"{' '.join(path)}: no option {opt}"


def test_the_script_runs_every_command_of_the_page() -> None:
    script = SCRIPT.read_text(encoding="utf-8")
    in_script = {
        _command_path(shlex.split(m)) for m in re.findall(r"^\s*\$G (.+?)(?:\\)?$", script, flags=re.M)
    }
    for argv in _page_commands():
        path = _command_path(argv)
        assert path in in_script or path in NOT_IN_SCRIPT, f"the tutorial script does not run {path}"


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_the_tutorial_script_runs_end_to_end(tmp_path: Path) -> None:
    """The page's path at tiny scale: import a CVAT export, check, train teacher and student, export,
    evaluate, score, validate against two graders, pre-annotate. Tiny 1-epoch models find few or no
    units, so this proves the commands and their files, not accuracy."""
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("statsmodels")
    env = dict(
        os.environ, YOLO_OFFLINE="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    work = tmp_path / "tutorial"
    r = subprocess.run(
        ["bash", str(SCRIPT), str(work)], capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for f in (
        "annotations.xml",
        "data/lab/data.yaml",
        "runs/teacher/manifest.json",
        "runs/student/best",
        "model.onnx",
        "results/frames.csv",
        "report/report.html",
        "pre/cvat_annotations.xml",
    ):
        assert (work / f).exists(), f
    assert "== done" in r.stdout
    assert "Traceback" not in r.stderr
