"""`grimace score` over the hostile corpus (issue 16's acceptance run, on the tiny test model): every
good input scored once, every bad input named in errors.csv and on stderr, every table written, no
traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.scales import RGS
from tests.hostile_corpus import TABLES, build, score
from tests.tiny_onnx import build_tiny_onnx

pytest.importorskip("onnxruntime")


def test_hostile_corpus_is_scored_or_named_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model = build_tiny_onnx(tmp_path / "model.onnx", RGS, imgsz=320)
    c = build(tmp_path / "corpus")
    t = score(c, model, tmp_path / "out", "--threads", "1")
    assert t.tracebacks == 0, t.stderr
    assert t.returncode == 1, t.stderr  # some inputs failed, the rest is complete
    assert t.good_missing == [], t.stderr
    assert t.bad_unnamed == [], t.stderr
    assert t.duplicates == 0  # dir, dir/rat1, dir/rat1/a.jpg and ./dir/rat1/a.jpg: one row
    assert t.tables == list(TABLES)
    text = (tmp_path / "out" / "frames.csv").read_text()
    assert "'=cmd|' -C calc'!A0.jpg" in text and "'+SUM(1;1).jpg" in text and "'@name.jpg" in text
    from openpyxl import load_workbook

    ws = load_workbook(tmp_path / "out" / "frames.xlsx")["frames"]
    names = [ws.cell(row=r, column=1) for r in range(2, ws.max_row + 1)]
    formula_cells = [c for c in names if c.data_type == "f"]
    assert formula_cells == [] and any(str(c.value).startswith("=cmd") for c in names)
