"""``frames.parquet`` (edge.records.write_parquet): typed columns whatever the rows hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.records import frame_column_types, frame_columns, write_parquet
from edge.scales import RGS

pq = pytest.importorskip("pyarrow.parquet")


def test_columns_are_typed_even_when_empty_and_cells_are_values(tmp_path: Path) -> None:
    cols = frame_columns(RGS)
    rows = [
        {
            "Filename": "=cmd()",
            "RGS": None,
            "frame_index": 3,
            "time_s": 1.5,
            "n_boxes": 0,
            "quality": float("nan"),
        },
        {"Filename": "b.jpg", "RGS": 1.25, "frame_index": 0, "time_s": 0.0, "n_boxes": 2, "quality": 0.5},
    ]
    out = write_parquet(tmp_path / "f.parquet", rows, cols, frame_column_types(RGS))
    t = pq.read_table(out)
    assert t.column_names == cols
    types = {f.name: str(f.type) for f in t.schema}
    assert types["RGS"] == "double" and types["frame_index"] == "int64" and types["Filename"] == "string"
    assert types["abstained"] == "string" and types["Ear Changes argmax"] == "double"  # all-empty columns
    data = t.to_pylist()
    assert data[0]["Filename"] == "=cmd()"  # not a spreadsheet: stored as the value, not escaped
    assert data[0]["quality"] is None and data[0]["RGS"] is None and data[1]["RGS"] == 1.25
    assert not list(tmp_path.glob("*.tmp*")), "written atomically"
