"""CLI commands: grimace convert (imports nothing heavy at module level).

``onnx``, ``inspect``, ``check-trt``, ``trt``, ``check``, ``sidecar``. torch / onnx / onnxruntime /
tensorrt are imported inside the commands, so ``grimace --help`` works without them.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import NoReturn

import typer

from edge.deps import MissingDependencyError, require

app = typer.Typer(no_args_is_help=True)


def _fail(msg: str) -> NoReturn:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(1)


def _images(folder: Path | None, limit: int, what: str) -> list:
    """Images for checks: a folder's, or synthetic drawn ones (with a warning) when none is given."""
    from convert.parity import load_images, synthetic_images

    if folder is None:
        typer.echo(f"warning: no --images given; {what} uses {limit} synthetic drawn images. "
                   "Pass --images DIR with real frames for a meaningful check.", err=True)
        return synthetic_images(limit)
    imgs, problems = load_images(folder, limit)
    for p in problems:
        typer.echo(f"warning: {p}", err=True)
    return imgs


REFUSED_EXIT = 3
"""Exit code of ``convert onnx --int8`` when the INT8 model agrees too little with the FP32 one."""


@app.command("onnx")
def onnx_cmd(
    checkpoint: Path = typer.Argument(
        ..., help="Fused model checkpoint, or (with --int8) an FP32 .onnx exported by this command."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output .onnx file (the FP32 export of a checkpoint)."
    ),
    imgsz: int | None = typer.Option(None, help="Square input size (default: the checkpoint's)."),
    batch: int = typer.Option(1, help="Fixed batch size."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic batch axis (spatial dims stay fixed)."),
    half: bool = typer.Option(False, "--half", help="FP16 weights, compute and I/O."),
    nms: bool = typer.Option(False, "--nms", help="In-graph NMS: output (B, max_det, 6+ng)."),
    opset: int = typer.Option(17, help="ONNX opset (>= 17)."),
    conf: float = typer.Option(0.25, help="Score threshold (in-graph NMS and parity post-processing)."),
    iou: float = typer.Option(0.45, help="NMS IoU threshold."),
    max_det: int = typer.Option(300, help="Boxes kept per image (NMS output rows)."),
    images: Path | None = typer.Option(None, help="Folder of real images for the parity check."),
    n_images: int = typer.Option(8, help="Images used by the parity check."),
    atol: float = typer.Option(1e-4, help="Raw-output tolerance of the FP32 parity check."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Simplify with onnxslim."),
    int8: bool = typer.Option(False, "--int8", help="Also write an INT8 (QDQ) model calibrated on --calib."),
    calib: list[Path] | None = typer.Option(
        None, help="Calibration images/videos/folders of your own animals (repeatable)."
    ),
    calib_n: int = typer.Option(
        200, help="Calibration frames read at most (every 4th is held out unless --holdout is given)."
    ),
    calib_fps: float = typer.Option(1.0, help="Frames per second sampled from calibration videos."),
    holdout: list[Path] | None = typer.Option(
        None, help="Frames for the INT8 agreement check (default: every 4th --calib frame, not calibrated)."
    ),
    holdout_n: int = typer.Option(64, help="Held-out frames read at most from --holdout."),
    int8_out: Path | None = typer.Option(
        None, help="INT8 model path (default: NAME.int8.onnx beside the FP32 model)."
    ),
    int8_format: str = typer.Option(
        "s8", help="s8: INT8 activations, FP32 biases (TensorRT, ARM CPUs); u8: UINT8 activations (x86 CPUs)."
    ),
    calib_method: str = typer.Option("minmax", help="Calibration: minmax, entropy or percentile."),
    percentile: float = typer.Option(99.999, help="Percentile of the percentile calibration."),
    keep_fp32: str = typer.Option(
        "outputs", help="Head parts kept FP32: none, decode, outputs, grade-branch or head."
    ),
    min_agree: float = typer.Option(
        0.95, help="Refuse INT8 below this box match, unit or argmax-grade agreement with FP32."
    ),
    min_icc: float = typer.Option(0.95, help="Refuse INT8 below this frame-score ICC(2,1) against FP32."),
) -> None:
    """Export a fused checkpoint to ONNX (with metadata), then check parity against PyTorch.

    With --int8, also quantize it to INT8 (ONNX Runtime static quantization, QDQ) on your own frames and
    refuse the INT8 model (exit code 3, nothing written) when it agrees too little with the FP32 one.
    Given an FP32 .onnx instead of a checkpoint, only the INT8 step runs.
    """
    from dataclasses import replace

    if checkpoint.suffix.lower() == ".onnx":
        if not int8:
            _fail(f"{checkpoint} is an ONNX file: give a fused checkpoint to export, or --int8 --calib "
                  "FRAMES to quantize it")
        if out is not None:
            _fail("--out names the FP32 export of a checkpoint; with an ONNX input name the INT8 file with "
                  "--int8-out")
        if not checkpoint.is_file():
            _fail(f"{checkpoint}: no such file")
        _int8_step(checkpoint, int8_out, calib, calib_n, calib_fps, holdout, holdout_n, int8_format,
                   calib_method, percentile, keep_fp32, min_agree, min_icc, conf, iou)
        return
    if out is None:
        _fail("--out is required: the .onnx file to write")
    if int8 and not calib:
        _fail("--int8 needs --calib: images or videos of your own animals to calibrate on")

    try:
        require("torch", "grimace convert onnx")
        require("onnx", "grimace convert onnx")
        require("onnxruntime", "grimace convert onnx (parity check)")
    except MissingDependencyError as e:
        _fail(str(e))
    from convert import export
    from convert.parity import check_onnx_parity
    from convert.trt_readiness import check_trt_readiness

    try:
        model, meta = export.load_fused_checkpoint(checkpoint)
    except (export.ExportError, ValueError, OSError) as e:
        _fail(str(e))
    if imgsz is not None:
        if tuple(meta.imgsz) != (imgsz, imgsz):
            typer.echo(f"warning: exporting {checkpoint} at {imgsz}x{imgsz}, but it was trained at "
                       f"{meta.imgsz[0]}x{meta.imgsz[1]}; its grades were fitted at that size and can "
                       "differ at another. Leave out --imgsz to export at the trained size.", err=True)
        meta = replace(meta, imgsz=(imgsz, imgsz))
    try:
        path, md, raw = export.export_onnx(
            model, meta, out, batch=batch, dynamic=dynamic, half=half, nms=nms, opset=opset,
            conf=conf, iou=iou, max_det=max_det, simplify=simplify,
        )
    except export.ExportError as e:
        _fail(str(e))
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, opset {opset}, "
               f"output {md.output}, {'FP16' if half else 'FP32'}, "
               f"batch {'dynamic' if dynamic else batch})")
    imgs = _images(images, n_images, "the parity check")
    rep = check_onnx_parity(model, path, md, imgs, raw_proto=raw, conf=conf, iou=iou, atol=atol)
    for line in rep.lines():
        typer.echo(line)
    ready = check_trt_readiness(path)
    typer.echo(f"TensorRT-readiness: {'PASS' if ready.ok else 'FAIL'}"
               + ("" if ready.ok else f" ({'; '.join(ready.errors)}); run `grimace convert check-trt`"))
    if not rep.ok:
        _fail(f"{path}: ONNX Runtime disagrees with PyTorch: {'; '.join(rep.failures)}. "
              "Do not deploy this file.")
    if int8:
        _int8_step(path, int8_out, calib, calib_n, calib_fps, holdout, holdout_n, int8_format,
                   calib_method, percentile, keep_fp32, min_agree, min_icc, conf, iou)


def _int8_step(
    fp32_path: Path, int8_out: Path | None, calib: list[Path] | None, calib_n: int, calib_fps: float,
    holdout: list[Path] | None, holdout_n: int, int8_format: str, calib_method: str, percentile: float,
    keep_fp32: str, min_agree: float, min_icc: float, conf: float, iou: float,
) -> None:
    """``convert onnx --int8``: calibrate, quantize, check agreement, write or refuse."""
    try:
        require("onnxruntime", "grimace convert onnx --int8")
        require("onnx", "grimace convert onnx --int8")
    except MissingDependencyError as e:
        _fail(str(e))
    from convert import quantize as q
    from convert.trt_readiness import check_trt_readiness

    if not calib:
        _fail("--int8 needs --calib: images or videos of your own animals to calibrate on")
    if calib_n < 2:
        _fail(f"--calib-n must be at least 2, got {calib_n}")
    try:
        opts = q.QuantOptions(method=calib_method, percentile=percentile, keep_fp32=keep_fp32,
                              format=int8_format)
    except q.QuantizationError as e:
        _fail(str(e))
    out = int8_out or fp32_path.with_name(fp32_path.stem + ".int8.onnx")
    if out.resolve() == fp32_path.resolve():
        _fail(f"--int8-out {out} is the FP32 model itself; choose another name")
    from convert.export import read_onnx_metadata
    from edge.artifact import ArtifactError

    try:
        fit = q.fit_to_input(read_onnx_metadata(fp32_path))
    except (ArtifactError, OSError) as e:
        _fail(str(e))
    frames, problems = q.read_frames(calib, calib_n, fps=calib_fps, transform=fit)
    for p in problems:
        typer.echo(f"warning: {p}", err=True)
    if holdout:
        hold, problems = q.read_frames(holdout, holdout_n, fps=calib_fps, transform=fit)
        for p in problems:
            typer.echo(f"warning: {p}", err=True)
        note = f"{len(frames)} frame(s) from --calib; agreement on {len(hold)} from --holdout"
    else:
        frames, hold = q.split_holdout(frames)
        note = f"{len(frames)} frame(s) from --calib; agreement on every 4th frame ({len(hold)}), held out"
    try:
        res = q.quantize_model(fp32_path, out, frames, hold, opts, conf=conf, iou=iou, min_agree=min_agree,
                               min_icc=min_icc, calib_note=note, progress=lambda s: typer.echo(s, err=True))
    except q.QuantizationRefused as e:
        for line in e.agreement.lines():
            typer.echo(line)
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(REFUSED_EXIT) from None
    except q.QuantizationError as e:
        _fail(str(e))
    for line in res.agreement.lines():
        typer.echo(line)
    t32, t8 = q.time_model(fp32_path, 1, 20), q.time_model(out, 1, 20)
    typer.echo(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, QDQ {int8_format}, {opts.method} "
               f"calibration, {len(res.fp32_nodes)} node(s) kept FP32); one CPU thread: FP32 {t32:.1f} ms, "
               f"INT8 {t8:.1f} ms ({t32 / t8:.2f}x)")
    if int8_format == "s8" and t8 >= t32 and platform.machine().lower() in ("x86_64", "amd64"):
        typer.echo("note: on x86 CPUs ONNX Runtime fuses only UINT8-activation Q/DQ graphs into integer "
                   "kernels, so this TensorRT-form (s8) model is not faster here; for an x86 box without a "
                   "GPU use --int8-format u8 (fast on x86, not TensorRT-ready). s8 is for TensorRT and "
                   "ARM64 CPUs.", err=True)
    ready = check_trt_readiness(out)
    if int8_format == "u8" and not ready.ok:
        typer.echo(f"TensorRT-readiness: FAIL, as expected for --int8-format u8 ({len(ready.errors)} "
                   "UINT8/INT32 Q/DQ nodes); this file is for ONNX Runtime on x86 CPUs, use --int8-format s8 "
                   "for TensorRT")
    else:
        typer.echo(f"TensorRT-readiness: {'PASS' if ready.ok else 'FAIL'}"
                   + ("" if ready.ok else f" ({ready.errors[0]}{'; ...' if len(ready.errors) > 1 else ''})"))


@app.command("inspect")
def inspect_cmd(model: Path = typer.Argument(..., help="ONNX file or TensorRT engine.")) -> None:
    """Print a model's metadata, inputs/outputs, opset, op counts and size."""
    from convert.inspect_model import format_inspection, inspect_model
    from edge.artifact import ArtifactError

    try:
        info = inspect_model(model)
    except (ArtifactError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    for line in format_inspection(info):
        typer.echo(line)


@app.command("check-trt")
def check_trt_cmd(model: Path = typer.Argument(..., help="ONNX file.")) -> None:
    """Check, without TensorRT, that TensorRT 10's ONNX parser accepts every op/dtype/shape."""
    from convert.trt_readiness import check_trt_readiness

    if not model.is_file():
        _fail(f"{model}: no such file")
    rep = check_trt_readiness(model)
    for line in rep.lines():
        typer.echo(line)
    if not rep.ok:
        raise typer.Exit(1)


@app.command("trt")
def trt_cmd(
    model: Path = typer.Argument(..., help="ONNX file exported by `grimace convert onnx`."),
    out: Path = typer.Option(..., "--out", "-o", help="Engine file to write (sidecar ENGINE.json beside)."),
    fp16: bool = typer.Option(False, "--fp16", help="Allow FP16 kernels."),
    int8: bool = typer.Option(False, "--int8", help="INT8: a QDQ model (`convert onnx --int8`) as it is; "
                              "otherwise entropy calibration (TensorRT 8.6 only)."),
    calib: Path | None = typer.Option(None, help="Folder of calibration images (INT8, TensorRT 8.6)."),
    calib_n: int = typer.Option(256, help="Calibration images used at most."),
    calib_batch: int = typer.Option(8, help="Calibration batch (dynamic-batch models)."),
    workspace: float = typer.Option(2.0, help="Workspace memory limit in GiB."),
    dla: int | None = typer.Option(None, help="DLA core (Jetson), with GPU fallback."),
    max_batch: int = typer.Option(8, help="Max batch of the profile (dynamic-batch models)."),
) -> None:
    """Build a TensorRT engine (TensorRT 8.6 / 10.x Python API) with timing cache and INT8."""
    from edge.backends import require_tensorrt

    try:
        require_tensorrt("grimace convert trt")
    except MissingDependencyError as e:
        _fail(str(e))
    from convert.parity import load_images
    from convert.trt_engine import BuildOptions, EngineBuildError, build_engine
    from edge.artifact import ArtifactError

    imgs = []
    if int8 and calib is not None:
        imgs, problems = load_images(calib, calib_n)
        for p in problems:
            typer.echo(f"warning: {p}", err=True)
    opts = BuildOptions(fp16=fp16, int8=int8, calib_images=imgs, calib_batch=calib_batch,
                        workspace_gb=workspace, dla_core=dla, max_batch=max_batch,
                        calib_cache=out.with_suffix(".calib"))
    try:
        md = build_engine(model, out, opts)
    except (EngineBuildError, MissingDependencyError, ArtifactError) as e:
        _fail(str(e))
    e = md.engine
    typer.echo(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): TensorRT {e.tensorrt_version}, "
               f"{e.precision}, {e.gpu_name} (compute {e.compute_capability}, {e.sm_count} SMs), "
               f"built in {e.build_time_s:.1f} s")


@app.command("check")
def check_cmd(
    engine: Path = typer.Argument(..., help="TensorRT engine."),
    onnx_model: Path = typer.Option(..., "--onnx", help="The ONNX file it was built from."),
    images: Path = typer.Option(..., help="Folder of images."),
    n_images: int = typer.Option(32, help="Images used at most."),
    conf: float = typer.Option(0.25, help="Score threshold of the post-processing."),
    iou: float = typer.Option(0.45, help="NMS IoU threshold."),
    min_agree: float = typer.Option(0.95, help="Fail below this fraction of matched boxes/units/grades."),
) -> None:
    """Report box IoU and unit/grade agreement of an engine against its ONNX model."""
    from edge.backends import require_tensorrt

    try:
        require_tensorrt("grimace convert check")
    except MissingDependencyError as e:
        _fail(str(e))
    from convert.trt_engine import check_engine_against_onnx
    from edge.artifact import ArtifactError

    imgs = _images(images, n_images, "the engine check")
    try:
        rep = check_engine_against_onnx(engine, onnx_model, imgs, conf=conf, iou=iou)
    except (ArtifactError, MissingDependencyError) as e:
        _fail(str(e))
    for line in rep.lines():
        typer.echo(line)
    ag = rep.agreement
    denom = max(ag.n_ref, 1)
    worst = min(ag.matched / denom, ag.unit_same / denom, ag.grade_same / denom) if ag.n_ref else 1.0
    if worst < min_agree:
        _fail(f"engine agrees with ONNX on only {worst:.1%} (< {min_agree:.0%})")


@app.command("sidecar")
def sidecar_cmd(
    engine: Path = typer.Argument(..., help="Engine built elsewhere (e.g. by trtexec)."),
    onnx_model: Path = typer.Option(..., "--onnx", help="The ONNX file it was built from."),
    precision: str = typer.Option(..., help="fp32, fp16 or int8."),
    tensorrt_version: str | None = typer.Option(None, help="Default: the installed tensorrt module's."),
    gpu_name: str | None = typer.Option(None, help="Default: detected with cuda-python."),
    compute_capability: str | None = typer.Option(None, help="e.g. 8.7 (default: detected)."),
    sm_count: int | None = typer.Option(None, help="Streaming multiprocessors, e.g. 16 (default: detected)."),
    build_time: float = typer.Option(0.0, help="Build time in seconds."),
    dla: int | None = typer.Option(None, help="DLA core used."),
) -> None:
    """Write ENGINE.json (ONNX metadata + TensorRT version, GPU, precision) for an engine."""
    from convert.export import read_onnx_metadata
    from convert.trt_engine import detect_gpu, now_iso, write_sidecar
    from edge.artifact import ArtifactError, EngineInfo

    if precision not in ("fp32", "fp16", "int8"):
        _fail(f"--precision must be fp32, fp16 or int8, got {precision!r}")
    if not engine.is_file():
        _fail(f"{engine}: no such engine file")
    try:
        meta = read_onnx_metadata(onnx_model)
    except (ArtifactError, OSError) as e:
        _fail(str(e))
    if tensorrt_version is None:
        try:
            from edge.backends import require_tensorrt

            tensorrt_version = require_tensorrt("detecting the TensorRT version").__version__
        except MissingDependencyError as e:
            _fail(f"{e} Or pass --tensorrt-version.")
    if gpu_name is None or compute_capability is None or sm_count is None:
        try:
            name, cc, sm = detect_gpu()
        except (MissingDependencyError, RuntimeError) as e:
            if gpu_name is None or compute_capability is None:
                _fail(f"cannot detect the GPU ({e}); pass --gpu-name, --compute-capability and --sm-count")
            name, cc, sm = gpu_name, compute_capability, None
        gpu_name, compute_capability = gpu_name or name, compute_capability or cc
        sm_count = sm_count or sm
    info = EngineInfo(tensorrt_version=tensorrt_version, gpu_name=gpu_name,
                      compute_capability=compute_capability, precision=precision,
                      build_time_s=build_time, built_at=now_iso(), dla_core=dla, sm_count=sm_count)
    side = write_sidecar(engine, meta, info)
    typer.echo(f"wrote {side}")
