"""edge.quality (frame selection) and edge.aggregate (per-animal / per-session summaries, subject map)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.aggregate import (
    SubjectMapError,
    aggregate,
    load_subject_map,
    mean_sem,
)
from edge.quality import completeness, frame_quality, frontalness
from edge.records import default_subject, frame_record
from edge.results import Detections
from edge.scales import GOAT, RGS
from edge.scoring import score_frame, select_boxes


def _dets(boxes: list[tuple[int, list[float], float]], ng: int = 3, grade: int = 1) -> Detections:
    gp = np.zeros((len(boxes), ng), np.float32)
    gp[:, grade] = 1.0
    return Detections(
        np.array([b for _, b, _ in boxes], np.float32).reshape(-1, 4),
        np.array([u for u, _, _ in boxes]),
        np.array([c for _, _, c in boxes], np.float32),
        gp,
    )


FACE = [
    (0, [200, 200, 240, 240], 0.9),  # eye
    (0, [300, 200, 340, 240], 0.9),  # eye
    (1, [150, 100, 200, 150], 0.8),  # ear
    (1, [340, 100, 390, 150], 0.8),  # ear
    (2, [250, 260, 290, 300], 0.85),  # nose
]


def _textured(h: int = 480, w: int = 640) -> np.ndarray:
    rng = np.random.default_rng(0)
    return cv2.resize(
        rng.integers(0, 255, (h // 8, w // 8, 3), np.uint8), (w, h), interpolation=cv2.INTER_NEAREST
    )


def test_quality_rewards_sharp_frontal_complete_faces() -> None:
    img = _textured()
    d = _dets(FACE)
    q = frame_quality(img, d, RGS)
    assert 0.5 < q.score <= 1 and q.parts["completeness"] == 1.0 and q.face_box is not None
    blurred = frame_quality(cv2.GaussianBlur(img, (31, 31), 0), d, RGS)
    assert blurred.parts["sharpness"] < q.parts["sharpness"] and blurred.score < q.score
    profile = _dets([FACE[0], *FACE[2:]])  # one eye: profile view
    qp = frame_quality(img, profile, RGS)
    assert qp.parts["frontalness"] == 0.25 and qp.parts["completeness"] == pytest.approx(0.8)
    assert qp.score < q.score
    tilted = _dets([FACE[0], (0, [300, 260, 340, 300], 0.9), *FACE[2:]])
    assert frontalness(tilted, select_boxes(tilted, RGS), RGS) < frontalness(d, select_boxes(d, RGS), RGS)
    small = _dets([(u, [v / 4 for v in b], c) for u, b, c in FACE])
    assert frame_quality(img, small, RGS).parts["size"] < q.parts["size"]
    none = frame_quality(img, Detections.empty(3), RGS)
    assert none.score == 0.0 and none.face_box is None


def test_quality_for_goat_has_no_frontalness() -> None:
    d = _dets([(0, [100, 100, 300, 300], 0.9)], ng=2)
    q = frame_quality(_textured(), d, GOAT)
    assert q.parts["frontalness"] is None and q.score > 0
    assert completeness(d, select_boxes(d, GOAT), GOAT) == 1.0


def test_mean_sem() -> None:
    assert mean_sem([]) == (None, None)
    assert mean_sem([2.0]) == (2.0, None)
    m, s = mean_sem([1.0, 2.0, 3.0, None])
    assert m == 2.0 and s == pytest.approx(1.0 / math.sqrt(3))


def test_aggregate_per_animal_with_abstentions() -> None:
    recs = []
    for subject, grade, n in (("rat1", 1, 3), ("rat2", 2, 2)):
        for i in range(n):
            res = score_frame(_dets(FACE, grade=grade), RGS)
            recs.append(
                frame_record(
                    res,
                    RGS,
                    name=f"{subject}_{i}.png",
                    source=f"/d/{subject}_{i}.png",
                    subject=subject,
                    session="s1",
                )
            )
    missing = score_frame(_dets(FACE[:2]), RGS)  # no ears, no nose
    recs.append(frame_record(missing, RGS, name="x.png", source="/d/x.png", subject="rat1", session="s1"))
    by = {g.group: g for g in aggregate(recs, RGS, by="subject")}
    assert by["rat1"].n_frames == 4 and by["rat1"].n_scored == 3 and by["rat1"].n_abstained == 1
    assert by["rat1"].mean == pytest.approx(1.0) and by["rat1"].sem == pytest.approx(0.0)
    assert by["rat2"].mean == pytest.approx(2.0) and by["rat2"].mean_argmax == pytest.approx(2.0)
    assert "missing required unit(s): ear, nose" in by["rat1"].abstain_reasons
    assert by["rat1"].unit_means["eye"] == pytest.approx(1.0) and by["rat1"].unit_means["whiskers"] is None
    sess = aggregate(recs, RGS, by="session")
    assert len(sess) == 1 and sess[0].n_frames == 6 and sess[0].mean == pytest.approx(1.4)
    row = by["rat1"].row(RGS)
    assert row["animal"] == "rat1"  # the animal's id, not the treatment group
    assert row["RGS mean"] == pytest.approx(1.0) and "Orbital Tightening mean" in row
    assert sess[0].row(RGS, by="session")["session"] == "s1"


def test_goat_verdict_and_share_of_painful_frames() -> None:
    recs = []
    for subject, probs in (("goatA", [0.9, 0.8, 0.3]), ("goatB", [0.1, 0.2, 0.6])):
        for i, p in enumerate(probs):
            d = Detections([[0, 0, 50, 50]], [0], [0.9], [[1 - p, p]])
            res = score_frame(d, GOAT)
            assert res.score == pytest.approx(p)
            assert res.score_argmax == float(p > 0.5)
            recs.append(
                frame_record(res, GOAT, name=f"{subject}{i}", source=f"{subject}.mp4", subject=subject)
            )
    by = {g.group: g for g in aggregate(recs, GOAT, min_frames=3)}
    assert by["goatA"].mean_pain_prob == pytest.approx(2.0 / 3) and by["goatA"].verdict == "painful"
    assert by["goatA"].share_painful == pytest.approx(2 / 3)
    assert by["goatB"].verdict == "not painful" and by["goatB"].share_painful == pytest.approx(1 / 3)
    assert aggregate(recs, GOAT, threshold=0.7, min_frames=3)[0].share_painful == pytest.approx(2 / 3)
    # the same rule as the goat clinic's evaluation (edge.verdict): too few scored frames, no verdict
    few = {g.group: g for g in aggregate(recs, GOAT, min_frames=4)}
    assert few["goatA"].verdict == "insufficient frames"
    assert few["goatA"].mean_pain_prob == pytest.approx(2 / 3)
    row = few["goatA"].row(GOAT)
    assert row["verdict"] == "insufficient frames" and row["min_frames"] == 4
    from edge.verdict import VerdictRule, animal_verdicts

    rows = animal_verdicts([r.subject for r in recs], [r.score for r in recs], VerdictRule(3, 0.5))
    assert [r["verdict"] for r in rows] == [by["goatA"].verdict, by["goatB"].verdict]


def test_subject_map(tmp_path: Path) -> None:
    p = tmp_path / "map.csv"
    p.write_text("image,subject,group,timepoint\nrat1_a.png,R1,saline,pre\nvids/session2.mp4,R2,drug,post\n")
    m = load_subject_map(p)
    assert m.lookup("/data/x/rat1_a.png").subject == "R1"
    info = m.lookup("/elsewhere/vids/session2.mp4")
    assert info.subject == "R2" and info.group == "drug" and info.timepoint == "post"
    assert m.lookup("/data/session2.avi").subject == "R2"  # by stem
    assert m.lookup("/data/unknown.png") is None and "/data/unknown.png" in m.unmatched
    bad = tmp_path / "bad.csv"
    bad.write_text("file,animal\na.png,R1\na.png,R2\n")
    with pytest.raises(SubjectMapError, match=r"bad\.csv:3: 'a\.png' is mapped to subject 'R2'"):
        load_subject_map(bad)
    nohdr = tmp_path / "nohdr.csv"
    nohdr.write_text("a.png,R1\n")
    with pytest.raises(SubjectMapError, match=r"nohdr\.csv:1: header"):
        load_subject_map(nohdr)
    empty = tmp_path / "empty.csv"
    empty.write_text("file,subject\na.png,\n")
    with pytest.raises(SubjectMapError, match=r"empty\.csv:2: empty"):
        load_subject_map(empty)


def test_default_subject() -> None:
    assert default_subject("/v/goat7_day1.mp4", "video") == "goat7_day1"
    assert default_subject("/imgs/rat3/a.png", "image") == "rat3"
