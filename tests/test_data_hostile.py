"""`grimace data check` and `data export-crops` on hostile datasets (issue 16): an image whose header
lies about its size, a UTF-8 BOM in a label file or in an Excel "CSV UTF-8" subjects.csv, a typo in a
scale key, a unit name that would leave --out. Before: a crash, false errors, a silent default."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import yaml
from typer.testing import CliRunner

from edge.cli import app
from tests.test_data_check import make_valid_dataset
from train.data.check import ERROR, run_check


def _errors(root: Path) -> list:
    return [p for p in run_check(root).problems if p.severity == ERROR]


def test_image_whose_header_lies_about_its_size_is_reported(tmp_path: Path) -> None:
    # before: cv2.error out of cv2.imdecode ended the whole check with a traceback
    root = make_valid_dataset(tmp_path / "ds")
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    (root / "images" / "train" / "r1_a.png").write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 99))
        + chunk(b"IEND", b"")
    )
    errs = _errors(root)
    assert [(Path(p.file).name, p.kind) for p in errs] == [("r1_a.png", "image-unreadable")]
    assert "100000 x 100000" in errs[0].message and "GRIMACE_MAX_PIXELS" in errs[0].message
    r = CliRunner().invoke(app, ["data", "check", str(root)])
    assert r.exit_code == 1 and "r1_a.png" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_bom_in_label_files_and_excel_subjects_csv_are_accepted(tmp_path: Path) -> None:
    # before: line 1 of a BOM label file was "not a number" and subjects.csv "lacked" its image column
    root = make_valid_dataset(tmp_path / "ds")
    lbl = root / "labels" / "train" / "r1_a.txt"
    lbl.write_bytes(b"\xef\xbb\xbf" + lbl.read_bytes())
    subj = root / "subjects.csv"
    subj.write_bytes(b"\xef\xbb\xbf" + subj.read_text().replace("\n", "\r\n").encode())  # Excel: BOM + CRLF
    assert _errors(root) == []
    from train.data.format import read_labels, read_subjects

    assert read_labels(lbl)[0].unit == 0
    assert "r1_a.png" in read_subjects(subj)


def test_typo_in_a_scale_key_is_refused_with_the_key_named(tmp_path: Path) -> None:
    # before: `grades_x: 2` was ignored and the unit silently got 3 grades
    root = make_valid_dataset(tmp_path / "ds")
    y = yaml.safe_load((root / "data.yaml").read_text())
    y["scale"] = {"name": "mine", "units": [{"name": "eye", "grades_x": 2}, {"name": "ear"}]}
    y["names"], y["nc"] = ["eye", "ear"], 2
    (root / "data.yaml").write_text(yaml.safe_dump(y))
    errs = [p for p in _errors(root) if p.kind == "bad-scale"]
    assert len(errs) == 1
    assert "unknown key(s) 'grades_x' (did you mean 'grades'?)" in errs[0].message
    assert "unit 'eye'" in errs[0].message


def test_unit_name_that_would_leave_out_is_refused(tmp_path: Path) -> None:
    # landed earlier (unit-name path safety); the issue's own case: a unit named ../../x
    root = make_valid_dataset(tmp_path / "ds")
    y = yaml.safe_load((root / "data.yaml").read_text())
    y["scale"] = {"name": "evil", "units": [{"name": "../../x"}, {"name": "ear"}]}
    y["names"], y["nc"] = ["../../x", "ear"], 2
    (root / "data.yaml").write_text(yaml.safe_dump(y))
    assert "unit-name" in {p.kind for p in _errors(root)}
    r = CliRunner().invoke(
        app, ["data", "export-crops", str(root), "--out", str(tmp_path / "a" / "b" / "crops")]
    )
    assert r.exit_code != 0
    assert not (tmp_path / "a" / "x").exists() and not (tmp_path / "x").exists()


def test_export_crops_skips_a_lying_image_and_exports_the_rest(tmp_path: Path) -> None:
    root = make_valid_dataset(tmp_path / "ds")
    ihdr = struct.pack(">IIBBBBB", 65500, 65500, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    (root / "images" / "train" / "r1_a.png").write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 99))
        + chunk(b"IEND", b"")
    )
    r = CliRunner().invoke(app, ["data", "export-crops", str(root), "--out", str(tmp_path / "crops")])
    assert r.exit_code == 0, r.output
    assert "r1_a.png" in r.output and "GRIMACE_MAX_PIXELS" in r.output
    assert len(list((tmp_path / "crops").rglob("*.png"))) > 0
