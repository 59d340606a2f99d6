"""Synthetic videos: an animal moving in a chamber, facing the camera only part of the time.

Test and demo material for frame selection and video scoring; not evidence of accuracy on real
animals. Each video ``NAME.mp4`` (``mp4v``) comes with two sidecars:

* ``NAME.jsonl``: one JSON object per frame, in frame order::

    {"frame": 0, "time": 0.0, "view": "front", "facing": true, "yaw": -4.2,
     "units": [{"unit": "eye", "class": 0, "instance": 0, "box": [x1, y1, x2, y2], "grade": 1}, ...],
     "score": 0.75}

  ``view`` is ``front`` (frontal, ``|yaw| <= 30`` degrees; ``facing`` is true), ``side`` (profile;
  the near eye/ear/nose/whiskers are listed if visible) or ``back`` (turned away; no units).
  ``box`` is in pixels (``x2``/``y2`` exclusive), ``score`` the ground-truth frame score by the
  scale's rule on frontal frames and ``null`` otherwise.
* ``NAME.json``: the video's subject, group, timepoint, scale, fps, size, frame count and grades.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import cv2
import numpy as np

from edge.scales import ScaleSpec, load_scale
from train.synth.draw import Canvas
from train.synth.faces import SPECIES_UNITS, draw_back, draw_face, draw_side
from train.synth.render import species_for
from train.synth.scene import finish, lighting
from train.synth.study import (
    GROUPS,
    PAIN_MEANS,
    TIMEPOINTS,
    SimSubject,
    grade_of,
    latent_pain,
    unit_severities,
)

FRONT_YAW = 30.0  # |yaw| up to this is a frontal, scorable view
SIDE_YAW = 120.0  # beyond this the animal has turned away


def _chamber(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Chamber seen through its front wall: back wall, floor in perspective. Returns image, floor y."""
    wall = np.clip(rng.uniform(90, 200) * (1 + rng.uniform(-0.1, 0.1, 3)), 0, 255)
    floor = np.array([150, 185, 205]) * rng.uniform(0.6, 1.0)
    img = np.empty((h, w, 3), np.uint8)
    horizon = int(h * rng.uniform(0.35, 0.45))
    img[:horizon] = wall.astype(np.uint8)
    img[horizon:] = floor.astype(np.uint8)
    inset = int(w * 0.12)
    edge = tuple(float(c) for c in wall * 0.7)
    cv2.line(img, (inset, horizon), (0, h), edge, max(1, w // 200), cv2.LINE_AA)
    cv2.line(img, (w - inset, horizon), (w, h), edge, max(1, w // 200), cv2.LINE_AA)
    cv2.line(img, (inset, 0), (inset, horizon), edge, max(1, w // 200), cv2.LINE_AA)
    cv2.line(img, (w - inset, 0), (w - inset, horizon), edge, max(1, w // 200), cv2.LINE_AA)
    cv2.line(img, (inset, horizon), (w - inset, horizon), edge, max(1, w // 200), cv2.LINE_AA)
    n = (h - horizon) * w // 400
    xs, ys, fs = rng.integers(0, w, n), rng.integers(horizon, h, n), rng.uniform(0.7, 1.2, n)
    for x, y, f in zip(xs, ys, fs, strict=True):
        col = tuple(float(c) for c in np.clip(floor * f, 0, 255))
        cv2.ellipse(img, (int(x), int(y)), (max(2, w // 150), max(1, w // 300)), 0, 0, 360, col, -1)
    return img, float(horizon)


def _headings(n: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Heading (yaw, degrees, 0 = facing the camera) per frame: dwell at sampled headings, turn
    smoothly between them. The first dwell faces the camera so every video has frontal frames."""
    keys: list[tuple[float, float]] = []
    t = 0.0
    total = n / fps
    first = True
    while t < total + 2:
        if first:
            target = rng.normal(0, 8)
            first = False
        else:
            kind = rng.choice(3, p=[0.45, 0.35, 0.2])
            target = [rng.normal(0, 10), rng.choice([-1, 1]) * rng.uniform(60, 100), 180.0][kind]
        dwell = rng.uniform(0.4, 1.2)
        keys.append((t, float(target)))
        keys.append((t + dwell, float(target)))
        t += dwell + rng.uniform(0.2, 0.5)
    out = np.empty(n)
    for i in range(n):
        ti = i / fps
        for (t0, a0), (t1, a1) in itertools.pairwise(keys):
            if t0 <= ti <= t1:
                diff = (a1 - a0 + 180) % 360 - 180
                f = 0.0 if t1 == t0 else (ti - t0) / (t1 - t0)
                f = 0.5 - 0.5 * math.cos(math.pi * f)
                out[i] = (a0 + diff * f + 180) % 360 - 180
                break
        else:
            out[i] = keys[-1][1]
    return out


def render_video(
    path: str | Path,
    spec: ScaleSpec,
    subject: SimSubject,
    timepoint: str,
    seed: int = 0,
    seconds: float = 4.0,
    fps: float = 15.0,
    imgsz: int = 640,
) -> Path:
    """Write one video of ``subject`` at ``timepoint`` plus its ``.jsonl`` and ``.json`` sidecars.

    Args:
        path: Output ``.mp4`` path (folders created).
        spec: Scale whose units are listed in the sidecar.
        subject: The animal (morphology, group).
        timepoint: ``day1`` or ``day30``; with the group it sets the latent pain.
        seed: Random seed of this video.
        seconds: Length.
        fps: Frame rate.
        imgsz: Frame width; height is three quarters of it (even).

    Returns:
        The video path.

    Raises:
        OSError: If OpenCV cannot open an ``mp4v`` writer for ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if seconds <= 0 or fps <= 0:
        raise ValueError(f"video seconds ({seconds}) and fps ({fps}) must be > 0")
    species = species_for(spec)
    m = subject.morph
    w = int(imgsz)
    h = int(round(imgsz * 0.75 / 2) * 2)
    n = max(1, round(seconds * fps))
    rng = np.random.default_rng([seed, 4])
    pain = latent_pain(subject, timepoint, rng)
    level, sev = unit_severities(pain, SPECIES_UNITS[species], rng)
    grades = {u.name: [grade_of(s, u) for s in sev[u.name]] for u in spec.units}
    scene, horizon = _chamber(h, w, rng)
    light = lighting(h, w, rng, 0.7)
    sigma = rng.uniform(0, 1.0)
    noise = rng.uniform(1, 5)
    yaw = _headings(n, fps, rng)
    ph = rng.uniform(0, 2 * np.pi, 4)
    per = rng.uniform(3, 7, 2)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV could not open an mp4v video writer")
    ids: dict[tuple[str, int], int] = {}
    meta: dict[int, tuple[str, int, int]] = {}
    for u in spec.units:
        for k in range(SPECIES_UNITS[species][u.name]):
            ids[(u.name, k)] = len(ids) + 1
            meta[ids[(u.name, k)]] = (u.name, k, spec.unit_index(u.name))
    lines = []
    try:
        for i in range(n):
            t = i / fps
            depth = 0.5 + 0.5 * math.sin(2 * math.pi * t / per[0] + ph[0])  # 0 far, 1 near
            scale = w * (0.06 + 0.05 * depth) * m.size
            cx = w / 2 + w * 0.3 * math.sin(2 * math.pi * t / per[1] + ph[1])
            cy = horizon + (h - horizon) * (0.15 + 0.45 * depth) - scale * 0.2
            c = Canvas(scene)
            a = float(yaw[i])
            if abs(a) <= FRONT_YAW:
                view = "front"
                c.set_pose(cx, cy - scale * 0.6, scale, 3 * math.sin(t + ph[2]), a)
                draw_face(c, m, sev, ids)
            elif abs(a) <= SIDE_YAW:
                view = "side"
                c.set_pose(cx, cy - scale * 0.3, scale, 0, 0)
                side_ids = {key: v for key, v in ids.items() if key[1] == 0 and key[0] != "face"}
                draw_side(c, m, sev, side_ids, 1 if a > 0 else -1)
            else:
                view = "back"
                c.set_pose(cx, cy - scale * 0.3, scale, 0, 0)
                draw_back(c, m)
            frame = finish(c.result(), light, sigma, noise, rng)
            writer.write(frame)
            boxes = c.boxes(list(meta))
            units = [
                {"unit": meta[oid][0], "class": meta[oid][2], "instance": meta[oid][1],
                 "box": list(b), "grade": grades[meta[oid][0]][meta[oid][1]]}
                for oid, b in boxes.items()
            ]
            score = None
            if view == "front" and units:
                per_unit: dict[str, list[int]] = {}
                for u in units:
                    per_unit.setdefault(u["unit"], []).append(u["grade"])
                means = [float(np.mean(per_unit[u.name])) for u in spec.units if u.name in per_unit]
                score = means[0] if spec.aggregation == "binary" else float(np.mean(means))
            lines.append(json.dumps({
                "frame": i, "time": round(t, 4), "view": view, "facing": view == "front",
                "yaw": round(a, 2), "units": units, "score": score,
            }))
    finally:
        writer.release()
    path.with_suffix(".jsonl").write_text("\n".join(lines) + "\n")
    info = {
        "video": path.name,
        "note": "synthetic test/demo video; not evidence of accuracy on real animals",
        "subject": subject.sid,
        "group": subject.group,
        "timepoint": timepoint,
        "scale": spec.to_dict(),
        "species": species,
        "coat": m.coat,
        "fps": fps,
        "frames": n,
        "width": w,
        "height": h,
        "latent_pain": pain,
        "severity": level,
        "grades": grades,
        "facing_frames": sum(1 for ln in lines if '"facing": true' in ln),
    }
    path.with_suffix(".json").write_text(json.dumps(info, indent=1))
    return path


def generate_video(
    out_path: str | Path,
    scale: str | Path | ScaleSpec = "rgs",
    seconds: float = 4.0,
    fps: float = 15.0,
    seed: int = 0,
    imgsz: int = 640,
    group: str = "injured",
    timepoint: str = "day1",
) -> Path:
    """Write one synthetic video of a new animal (test and demo material, not real-animal evidence).

    Args:
        out_path: Output ``.mp4`` path; ``.jsonl`` (per frame) and ``.json`` sidecars go beside it.
        scale: Scale name, YAML path or spec.
        seconds: Length in seconds.
        fps: Frame rate.
        seed: Random seed (the animal's look and its movement).
        imgsz: Frame width (height = 3/4 of it).
        group: ``control`` or ``injured``.
        timepoint: ``day1`` or ``day30``.

    Returns:
        The video path.
    """
    if (group, timepoint) not in PAIN_MEANS:
        raise ValueError(f"group must be one of {GROUPS} and timepoint one of {TIMEPOINTS}")
    spec = load_scale(scale)
    species = species_for(spec)
    from train.synth.faces import sample_morphology

    rng = np.random.default_rng([seed, 5])
    sub = SimSubject(f"{species}01", group, "test", 1.0, sample_morphology(species, rng))
    return render_video(out_path, spec, sub, timepoint, seed, seconds, fps, imgsz)
