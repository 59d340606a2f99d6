"""`grimace train distill`: unlabelled frames come from edge.sources (same --fps, same frames as score)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.sources import Frame, iter_inputs
from tests.fused_tiny import TinyTeacher, make_tiny_dataset
from train.data.format import load_dataset


@pytest.fixture()
def teacher_stub(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI loads the teacher run with ``train.teacher.load_teacher``; give it the tiny teacher."""
    import train.teacher

    monkeypatch.setattr(train.teacher, "load_teacher", lambda run, *a, **k: TinyTeacher())


def _video(path: Path, image: np.ndarray, n: int = 25, fps: float = 10.0) -> Path:
    h, w = image.shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert vw.isOpened()
    for _ in range(n):
        vw.write(image)
    vw.release()
    return path


def test_train_distill_samples_videos_like_score(tmp_path: Path, teacher_stub: None) -> None:
    from edge.cli import app

    src = make_tiny_dataset(tmp_path / "src", n_train=2, n_val=1, unlabelled=1)
    unl = src / "unlabelled"
    video = _video(unl / "cage.avi", cv2.imread(str(unl / "u000.png")))
    (unl / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    # 10 fps video sampled at 3 fps of video time: frames 0, 4, 7, 10, ... (an index step would give 0, 3, 6)
    want = [f.index for f in iter_inputs([video], fps=3.0) if isinstance(f, Frame)]
    assert want[:3] == [0, 4, 7]
    out = tmp_path / "dist"
    args = [
        "train",
        "distill",
        "--teacher",
        "T",
        "--data",
        str(src),
        "-o",
        str(out),
        "--unlabelled",
        str(unl),
    ]
    res = CliRunner().invoke(app, [*args, "--fps", "3", "--device", "cpu"])
    assert res.exit_code == 1, res.output  # one bad input, reported and skipped; the rest written
    assert "broken.png" in res.output and "skipped" in res.output
    frames = sorted(p.name for p in (out / "images" / "train").glob("unl_cage_*.png"))
    assert frames == [f"unl_cage_{i:06d}.png" for i in want]
    assert (out / "images" / "train" / "unl_u000.png").exists()
    info = load_dataset(out)
    d = info.raw["distill"]
    assert d["unlabelled_frames"] == len(want) + 1 and d["skipped"] == 1 and d["fps"] == 3.0
    assert d["device"]["device"] == "cpu"


def test_distill_annotate_is_a_deprecated_alias(tmp_path: Path, teacher_stub: None) -> None:
    from edge.cli import app

    src = make_tiny_dataset(tmp_path / "src", n_train=2, n_val=1)
    res = CliRunner().invoke(
        app, ["distill", "annotate", "--teacher", "T", "--data", str(src), "--out", str(tmp_path / "d")]
    )
    assert res.exit_code == 0, res.output
    assert "`grimace distill annotate` is deprecated" in res.output and "grimace train distill" in res.output
    assert load_dataset(tmp_path / "d").raw["distill"]["labelled_images"] == 4
    top = CliRunner().invoke(app, ["--help"]).output
    assert "distill" not in top  # hidden from the root; listed under `grimace train`
    assert "distill" in CliRunner().invoke(app, ["train", "--help"]).output


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--fps", "nan", "finite number > 0"),
        ("--fps", "0", "finite number > 0"),
        ("--device", "gpu", "--device"),
    ],
)
def test_train_distill_usage_errors_exit_2(
    tmp_path: Path, teacher_stub: None, option: str, value: str, message: str
) -> None:
    from edge.cli import app

    src = make_tiny_dataset(tmp_path / "src", n_train=1, n_val=1)
    args = [
        "train",
        "distill",
        "--teacher",
        "T",
        "--data",
        str(src),
        "-o",
        str(tmp_path / "d"),
        option,
        value,
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "d").exists()


def test_place_teacher() -> None:
    import torch

    from train.fused.distill import place_teacher

    cpu, gpu = torch.device("cpu"), torch.device("cuda:0")
    assert place_teacher(TinyTeacher(), cpu) == (cpu, "")
    used, note = place_teacher(TinyTeacher(), gpu, explicit=False)  # auto picked a GPU it cannot use
    assert used == cpu and "runs on the CPU only" in note
    with pytest.raises(ValueError, match="use --device cpu"):
        place_teacher(TinyTeacher(), gpu, explicit=True)

    class Movable(TinyTeacher):
        def to(self, device: torch.device) -> None:
            self.device = device

    t = Movable()
    assert place_teacher(t, gpu) == (gpu, "") and t.device == gpu
