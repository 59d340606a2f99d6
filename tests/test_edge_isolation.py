"""`edge` must work without torch/ultralytics/train/convert (it runs on a Jetson without PyTorch)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

EDGE = Path(__file__).resolve().parents[1] / "edge"
FORBIDDEN = ("torch", "torchvision", "ultralytics", "train", "convert", "transformers")

BLOCKER = """
import sys, importlib.abc
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {forbidden!r}:
            raise ImportError('blocked in test: ' + name)
sys.meta_path.insert(0, _Block())
"""


def _edge_modules() -> list[str]:
    return sorted(
        "edge." + p.relative_to(EDGE).with_suffix("").as_posix().replace("/", ".")
        for p in EDGE.rglob("*.py")
        if p.name != "__init__.py" and p.name != "__main__.py"
    )


def test_no_forbidden_imports_anywhere_in_edge_source() -> None:
    """Static check: no import of a forbidden package in any edge module, at any depth."""
    bad = []
    for path in EDGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bad += [f"{path}:{node.lineno}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not bad, "edge/ imports forbidden packages:\n" + "\n".join(bad)


@pytest.mark.parametrize("module", ["edge", *_edge_modules()])
def test_edge_module_imports_with_torch_unimportable(module: str) -> None:
    code = BLOCKER.format(forbidden=set(FORBIDDEN) - {"train", "convert"}) + f"import {module}\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_cli_help_works_without_torch() -> None:
    code = (
        BLOCKER.format(forbidden={"torch", "torchvision", "ultralytics", "transformers"})
        + "import sys; sys.argv=['grimace','--help']\n"
        + "from edge.cli import main\n"
        + "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "score" in r.stdout or "data" in r.stdout
