"""Archive scoring on Ray (``grimace score ... --engine ray [--address ...]``).

The input list is what local scoring reads (:func:`edge.sources.expand_inputs`). Ray Data turns it into
a dataset of one row per input file (one block each) and maps it through a pool of model actors
(:class:`_ScoreActor`, ``compute=ActorPoolStrategy``): each actor opens the ONNX model once
(:func:`edge.predictor.load_model`, :class:`edge.predictor.Predictor`) and, per input, reads the file
with the local reader (:func:`edge.sources.iter_inputs`, videos sampled at ``--fps``), scores every
frame and returns the input's frame records, JSON lines, errors and stage times as one row.

Why Ray Data reads the *list* and our reader decodes inside the actor, rather than Ray's
``read_images``/``read_videos``: those decode with other libraries (PIL, decord), so frames, EXIF
orientation, 16-bit scaling, container timestamps, ``--fps`` sampling and the bad-file messages would
differ from local scoring, and "identical rows for identical inputs" would not hold. Decoding where the
model runs also keeps full frames out of the object store (only records travel).

The driver writes each finished input to ``<out>/parts/<key>.json`` (atomically) as it arrives; the
key hashes the input (resolved path, size, mtime) and the settings (model file, scale, fps, thresholds,
subject map). A re-run of a half-finished job reads the parts it finds and sends only the rest to Ray.
When everything is in, the outputs are written by the local runner's writers
(``frames.csv``/``.parquet``/``.xlsx``/``.jsonl``, ``summary_by_animal.csv``, ``summary_by_session.csv``,
``errors.csv``, ``run.json``), in the local order, so the rows equal a local run's.

Failure of a worker (an actor process killed, a node lost) is retried by Ray: the actors are created
with ``max_restarts`` and their tasks with ``max_task_retries``; an input whose task was cut off is
scored again from its start, and since the driver keeps one part per input key, nothing is duplicated.

Inputs and the model must be readable at the same path on every node (a shared filesystem); annotated
images and videos are not written with this engine (the outputs say so in ``run.json`` notes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge import __version__
from edge.aggregate import SubjectMap, load_subject_map
from edge.deps import require
from edge.fileio import atomic_write_text
from edge.predictor import STAGES, StageTimes
from edge.records import RECORD_SCHEMA, FrameRecord, JsonlWriter, dumps, json_line, record_from_frame
from edge.sources import ItemError, expand_inputs
from edge.verdict import DEFAULT_MIN_FRAMES

PARTS = "parts"
"""Folder under the output folder holding one finished input per file (``<key>.json``)."""

PART_SCHEMA = 1
"""Version of a part file's layout (part of every key, so a layout change re-scores)."""

DEFAULT_MAX_RETRIES = 3
"""Actor restarts and task retries Ray makes before an input's failure ends the job."""


class RayScoreError(RuntimeError):
    """The Ray job could not run or failed after its retries (the message says why; parts written so
    far are kept, so a re-run continues)."""


# ------------------------------------------------------------------------------------------ keys
def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def settings_key(
    model: Path,
    *,
    scale: str | None,
    fps: float | None,
    conf: float,
    iou: float,
    min_quality: float | None,
    subject_map: str | None,
    subject_entries: dict[str, Any] | None = None,
) -> str:
    """Hash of everything besides the input that decides an input's rows (model bytes, thresholds,
    sampling, subject map text or entries, record and part schema)."""
    smap_digest = _file_digest(Path(subject_map)) if subject_map else subject_entries
    blob = json.dumps(
        {
            "model": _file_digest(model),
            "scale": scale,
            "fps": fps,
            "conf": conf,
            "iou": iou,
            "min_quality": min_quality,
            "subject_map": smap_digest,
            "record_schema": RECORD_SCHEMA,
            "part_schema": PART_SCHEMA,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def input_key(path: Path, settings: str) -> str:
    """Key of one input under one set of settings: its resolved path, size and modification time.

    A changed file (new size or mtime) or changed settings get a new key and are scored again.
    """
    st = path.stat() if path.exists() else None
    ident = f"{path.resolve()}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}|{settings}"
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


# ----------------------------------------------------------------------------------- the worker
def score_one_input(
    pred: Any, read_path: str, display: str, fps: float | None, smap: SubjectMap | None
) -> dict[str, Any]:
    """Read and score one input as local scoring does; the part (JSON-safe dict) of that input.

    Args:
        pred: A :class:`edge.predictor.Predictor`.
        read_path: Absolute path the worker reads.
        display: The path as local scoring names it (``source`` column, error messages).
        fps: Video sampling rate.
        smap: Subject map (one entry, looked up on the driver) or ``None``.

    Returns:
        ``{"items": [...], "times": {...}, "frames": n}``; each item is ``{"record", "line"}`` for a
        frame or ``{"error"}`` for a failed input, in reading order.
    """
    from edge.sources import iter_inputs

    spec = pred.spec
    pred.times = StageTimes()
    items: list[dict[str, Any]] = []
    for item in iter_inputs([read_path], fps=fps):
        if isinstance(item, ItemError):
            msg = item.message.replace(read_path, display)
            items.append({"error": {"source": display, "message": msg, "frames_read": item.frames_read}})
            continue
        item.source = display
        pred.times.add("decode", item.decode_s)
        res = pred([item.image], [item.source])[0]
        rec = record_from_frame(res, spec, item, smap)
        items.append({"record": rec.to_dict(), "line": json_line(rec, spec, res)})
    return {"items": items, "times": dict(pred.times.seconds), "frames": pred.times.frames}


class _ScoreActor:
    """One model per actor process; scores whole inputs (rows of ``key``, ``path``, ``display``)."""

    def __init__(
        self,
        model: str,
        scale: str | None,
        fps: float | None,
        conf: float,
        iou: float,
        min_quality: float | None,
        threads: int,
        providers: list[str] | None,
    ) -> None:
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        from edge.predictor import Predictor, load_model
        from edge.quality import frame_quality

        self.model = load_model(model, scale=scale, threads=threads, providers=providers)
        self.pred = Predictor(
            self.model, conf=conf, iou=iou, min_quality=min_quality, quality_fn=frame_quality
        )
        self.fps = fps

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys, parts = [], []
        for key, path, display, smap_json in zip(
            batch["key"], batch["path"], batch["display"], batch["smap"], strict=True
        ):
            smap = _smap_from_json(str(smap_json))
            try:
                part = score_one_input(self.pred, str(path), str(display), self.fps, smap)
            except Exception as e:  # not a bad input (those are ItemErrors): report, retry on a re-run
                part = {
                    "items": [
                        {
                            "error": {
                                "source": str(display),
                                "message": f"could not be scored: {type(e).__name__}: {e}",
                                "frames_read": 0,
                            }
                        }
                    ],
                    "times": {},
                    "frames": 0,
                    "transient": True,
                }
            part["pid"] = os.getpid()
            keys.append(str(key))
            parts.append(dumps(part))
        return {"key": np.array(keys, dtype=object), "part": np.array(parts, dtype=object)}


def _smap_to_json(smap: SubjectMap | None, display: str) -> str:
    """The subject map's entry for one input, looked up on the driver (as local scoring looks it up)."""
    if smap is None:
        return json.dumps({"map": False})
    info = smap.lookup(display)
    return json.dumps({"map": True, "info": None if info is None else dataclasses.asdict(info)})


def _smap_from_json(text: str) -> SubjectMap | None:
    from edge.aggregate import SubjectInfo

    data = json.loads(text)
    if not data["map"]:
        return None
    info = data["info"]
    return _ExactMap(None if info is None else SubjectInfo(**info))


class _ExactMap(SubjectMap):
    """A subject map that answers every lookup with the entry the driver found for this input (or
    ``None``: the input is not in the map, its frames go to animal ``unmapped`` as locally)."""

    def __init__(self, info: Any) -> None:
        super().__init__({})
        self.info = info

    def lookup(self, source: str | Path) -> Any:
        """The driver's answer, whatever ``source`` is."""
        return self.info


# ----------------------------------------------------------------------------------- the driver
def _connect(ray: Any, address: str | None, num_cpus: int | None) -> bool:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local one; whether we
    started it (and so shut it down)."""
    if ray.is_initialized():
        return False
    try:
        if address or os.environ.get("RAY_ADDRESS"):
            ray.init(address=address or None, logging_level=logging.ERROR, log_to_driver=False)
        else:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
            )
    except Exception as e:  # ConnectionError, RuntimeError, ValueError...
        where = address or os.environ.get("RAY_ADDRESS") or "a new local cluster"
        raise RayScoreError(f"cannot start or join the Ray cluster ({where}): {e}") from None
    return True


def _read_part(path: Path) -> dict[str, Any] | None:
    try:
        part = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # torn or unreadable: score that input again
    return part if isinstance(part, dict) and "items" in part else None


def score_inputs_ray(
    paths: Sequence[str | Path],
    model: str | Path,
    out: str | Path,
    *,
    scale: str | None = None,
    fps: float | None = None,
    subject_map: str | Path | SubjectMap | None = None,
    min_quality: float | None = None,
    min_frames: int = DEFAULT_MIN_FRAMES,
    conf: float = 0.25,
    iou: float = 0.45,
    threads: int = 0,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    num_cpus: int | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    progress: bool = True,
    log: Any = print,
) -> Any:
    """Score images and videos on Ray; same outputs (and rows) as :func:`edge.runner.score_inputs`.

    Args:
        paths: Files and folders.
        model: ONNX model (read by every actor at this path).
        out: Output folder (created; ``parts/`` inside it holds finished inputs).
        scale: Scale the model must have been made for.
        fps: Video sampling rate (``None``: every frame).
        subject_map: CSV (or loaded map) mapping files/videos to animal ids.
        min_quality: Frames below this quality abstain.
        min_frames: Binary scales: fewest scored frames for a per-animal verdict (as locally).
        conf: Detection confidence threshold.
        iou: NMS IoU threshold.
        threads: ONNX Runtime threads per actor (0: ``cpus_per_actor``).
        address: Ray cluster (``auto``, ``host:6379``, ``ray://host:10001``); ``None``: ``RAY_ADDRESS``,
            else a local cluster started for this run.
        actors: Model actors (default: the cluster's CPUs / ``cpus_per_actor``, or its GPUs /
            ``gpus_per_actor``, at most one per input).
        cpus_per_actor: CPUs each actor reserves.
        gpus_per_actor: GPUs each actor reserves (> 0 runs ONNX Runtime's CUDA provider).
        num_cpus: CPUs of a local cluster started here (default: all).
        max_retries: Actor restarts and task retries before the job fails.
        progress: Show a progress bar over inputs.
        log: ``f(str)`` for messages.

    Returns:
        An :class:`edge.runner.ScoreRun` (records in local order).

    Raises:
        FileNotFoundError, edge.artifact.ArtifactError, edge.scales.ScaleMismatchError,
        edge.aggregate.SubjectMapError: Before anything runs.
        RayScoreError: The cluster cannot be reached, or an input failed after its retries.
    """
    from tqdm import tqdm

    from edge.predictor import load_model
    from edge.runner import ScoreRun, _write_outputs

    t_start = time.perf_counter()
    out = Path(out)
    model = Path(model)
    with load_model(model, scale=scale) as m:  # refuse a wrong model/scale before any work
        spec = m.spec
    if model.suffix.lower() != ".onnx":
        raise RayScoreError(
            f"{model}: --engine ray runs ONNX models (ONNX Runtime actors), not {model.suffix}"
        )
    smap = load_subject_map(subject_map) if isinstance(subject_map, (str, Path)) else subject_map
    out.mkdir(parents=True, exist_ok=True)
    parts_dir = out / PARTS
    parts_dir.mkdir(exist_ok=True)

    settings = settings_key(
        model,
        scale=scale,
        fps=fps,
        conf=conf,
        iou=iou,
        min_quality=min_quality,
        subject_map=str(subject_map) if isinstance(subject_map, (str, Path)) else None,
        subject_entries=(
            {k: dataclasses.asdict(v) for k, v in smap.entries.items()}
            if smap is not None and not isinstance(subject_map, (str, Path))
            else None
        ),
    )
    files, list_errors = expand_inputs(paths)
    keys = [input_key(f, settings) for f in files]
    smap_cells = [_smap_to_json(smap, str(f)) for f in files]
    parts: dict[str, dict[str, Any]] = {}
    for k in keys:
        p = _read_part(parts_dir / f"{k}.json")
        if p is not None:
            parts[k] = p
    resumed = len(parts)
    todo = [(k, f, s) for k, f, s in zip(keys, files, smap_cells, strict=True) if k not in parts]
    if resumed:
        log(f"resuming: {resumed} of {len(files)} input(s) already scored in {parts_dir}")

    transient: dict[str, dict[str, Any]] = {}
    n_actors = 0
    pids: set[int] = set()
    if todo:
        ray = require("ray", "--engine ray")
        started = _connect(ray, address, num_cpus)
        try:
            import ray.data

            logging.getLogger("ray.data").setLevel(logging.ERROR)
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            res = ray.cluster_resources()
            if gpus_per_actor > 0:
                slots = int(res.get("GPU", 0) // gpus_per_actor)
                if slots < 1:
                    raise RayScoreError(f"--gpus-per-actor {gpus_per_actor}: the Ray cluster has no free GPU")
            else:
                slots = int(res.get("CPU", 1) // max(cpus_per_actor, 1e-9))
            n_actors = max(1, min(actors or slots, len(todo)))
            rows = [{"key": k, "path": str(f.resolve()), "display": str(f), "smap": s} for k, f, s in todo]
            ds = ray.data.from_items(rows, override_num_blocks=len(rows))
            map_kwargs = {
                "fn_constructor_kwargs": {
                    "model": str(model.resolve()),
                    "scale": scale,
                    "fps": fps,
                    "conf": conf,
                    "iou": iou,
                    "min_quality": min_quality,
                    "threads": threads or max(1, int(cpus_per_actor)),
                    "providers": (
                        ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpus_per_actor > 0 else None
                    ),
                },
                "num_cpus": cpus_per_actor,
                "num_gpus": gpus_per_actor or None,
                "max_restarts": max_retries,
                "max_task_retries": max_retries,
            }
            with warnings.catch_warnings():  # bounded retries (Ray Data's default retries forever)
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
                ds = ds.map_batches(
                    _ScoreActor,
                    batch_size=1,
                    batch_format="numpy",
                    compute=ray.data.ActorPoolStrategy(size=n_actors),
                    **map_kwargs,
                )
            bar = tqdm(total=len(todo), unit="input", desc="scoring (ray)", disable=not progress)
            try:
                for row in ds.iter_rows():
                    key, part = str(row["key"]), json.loads(str(row["part"]))
                    if key in parts or key in transient:
                        continue  # a retried task's output seen twice: one part per input
                    pids.add(int(part.pop("pid", 0)))
                    if part.get("transient"):
                        transient[key] = part
                    else:
                        atomic_write_text(parts_dir / f"{key}.json", dumps(part))
                        parts[key] = part
                    bar.update(1)
            except Exception as e:
                raise RayScoreError(
                    f"the Ray job failed after retries ({type(e).__name__}: {str(e).splitlines()[0]}); "
                    f"{len(parts)} of {len(files)} input(s) are kept in {parts_dir}, re-run to continue"
                ) from None
            finally:
                bar.close()
        finally:
            if started:
                ray.shutdown()

    # ------------------------------------------------------------------ assemble in local order
    run = ScoreRun()
    jsonl = JsonlWriter(out / "frames.jsonl")
    try:
        for e in list_errors:
            run.errors.append(e)
            jsonl.write({"error": e.message, "source": e.source, "frames_read": e.frames_read})
        for k in keys:
            part = parts.get(k) or transient.get(k)
            if part is None:
                raise RayScoreError(f"input with key {k} came back from Ray without a result")
            for item in part["items"]:
                if "error" in item:
                    err = ItemError(**item["error"])
                    run.errors.append(err)
                    jsonl.write({"error": err.message, "source": err.source, "frames_read": err.frames_read})
                    continue
                run.records.append(FrameRecord(**item["record"]))
                jsonl.write(item["line"])
            for stage in STAGES:
                run.times.add(stage, float(part.get("times", {}).get(stage, 0.0)))
            run.times.frames += int(part.get("frames", 0))
    finally:
        jsonl.close()
    for e in run.errors:
        log(f"error: {e}")
    run.wall_s = time.perf_counter() - t_start
    _write_outputs(run, spec, out, smap, model, fps, conf, iou, min_quality, min_frames)
    run.notes.append("annotated images/videos are not written with --engine ray")
    if transient:
        run.notes.append(
            f"{len(transient)} input(s) failed unexpectedly and were not kept as finished; "
            "a re-run retries them"
        )
    if smap is not None and smap.unmatched:
        run.notes.append(
            f"{len(smap.unmatched)} input(s) not in the subject map {smap.path}; grouped as 'unmapped'"
        )
    info = json.loads((out / "run.json").read_text())
    info.update(
        engine="ray",
        ray_address=address or os.environ.get("RAY_ADDRESS") or "local",
        actors=n_actors,
        actor_pids=sorted(p for p in pids if p),
        inputs=len(files),
        inputs_resumed=resumed,
        inputs_scored_now=len(todo),
        grimace_edge=__version__,
        notes=run.notes,
    )
    atomic_write_text(out / "run.json", json.dumps(info, indent=2))
    for n in run.notes:
        log(f"note: {n}")
    return run
