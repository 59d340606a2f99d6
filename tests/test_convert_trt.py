"""TensorRT engine side.

The parts that need no TensorRT run everywhere: calibration batches, the engine/device compatibility
rule, sidecar writing/reading, `grimace convert sidecar` + `inspect` on an engine, and
jetson/build_engine.sh with a stand-in trtexec. The build against stand-ins for TensorRT's objects
is in test_convert_trt_build.py; the tests marked `trt`/`gpu` need the real TensorRT and an NVIDIA GPU
and are skipped, with the reason, where `tensorrt` is not importable (always, in this project's CI).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from convert.trt_engine import calibration_batches, write_sidecar
from edge.artifact import ArtifactError, EngineInfo, ModelMetadata, sidecar_path
from edge.backends import EngineMismatchError, GpuInfo, check_engine_compat, read_sidecar
from edge.postprocess import preprocess
from edge.scales import RGS

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(
    not HAS_TRT, reason="TensorRT is not installed (its wheels come from NVIDIA's index; needs an NVIDIA GPU)"
)

ORIN = EngineInfo(tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7", precision="fp16")


def _meta(**kw) -> ModelMetadata:
    return ModelMetadata(scale=RGS.to_dict(), imgsz=(64, 64), **kw)


def test_sidecar_is_checked_by_the_runtime_compat_rule(tmp_path):
    """What `grimace convert trt` writes is what the runtime's engine check reads and enforces."""
    eng = tmp_path / "rgs.engine"
    eng.write_bytes(b"not a real engine")
    write_sidecar(eng, _meta(), ORIN)
    md = read_sidecar(eng)
    check_engine_compat(md, eng, "10.3.0", ("Orin", "8.7"))  # same build facts: accepted
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10\.3\.0.*10\.7\.0.*grimace convert trt"):
        check_engine_compat(md, eng, "10.7.0", ("Orin", "8.7"))
    with pytest.raises(EngineMismatchError, match=r"compute capability 8\.7.*compute capability 8\.6"):
        check_engine_compat(md, eng, "10.3.0", ("NVIDIA GeForce RTX 3090", "8.6"))


def test_gpu_compat_by_compute_capability_and_sm_count(tmp_path):
    """Defect 1: the name nvidia-smi gives ("Orin (nvgpu)") is CUDA's "Orin"; an AGX Orin (16 SMs) and
    an Orin Nano (8 SMs) share name and compute capability and differ in SM count."""
    eng = tmp_path / "rgs.engine"
    smi_named = EngineInfo("10.3.0", "Orin (nvgpu)", "8.7", "fp16")  # as the old build_engine.sh wrote
    write_sidecar(eng, _meta(), smi_named)
    check_engine_compat(read_sidecar(eng), eng, "10.3.0", GpuInfo("Orin", "8.7", 16))
    write_sidecar(eng, _meta(), EngineInfo("10.3.0", "Orin", "8.7", "fp16", sm_count=16))
    md = read_sidecar(eng)
    check_engine_compat(md, eng, "10.3.0.30", GpuInfo("Orin", "8.7", 16))
    with pytest.raises(EngineMismatchError, match=r"16 SMs.*8 SMs.*AGX Orin vs Orin Nano"):
        check_engine_compat(md, eng, "10.3.0", GpuInfo("Orin", "8.7", 8))
    check_engine_compat(md, eng, "10.3.0", ("Orin", "8.7"))  # SM count unknown here: names decide
    with pytest.raises(EngineMismatchError, match="this GPU is 'Xavier'"):
        check_engine_compat(md, eng, "10.3.0", ("Xavier", "8.7"))


def test_calibration_batches_use_runtime_preprocessing():
    rng = np.random.default_rng(0)
    imgs = [
        rng.integers(0, 255, (int(rng.integers(40, 90)), int(rng.integers(40, 90)), 3), np.uint8)
        for _ in range(5)
    ]
    md = _meta()
    batches = list(calibration_batches(imgs, md, batch=2))
    assert len(batches) == 2  # the incomplete last batch is dropped
    assert all(b.shape == (2, 3, 64, 64) and b.dtype == np.float32 and b.flags.c_contiguous for b in batches)
    np.testing.assert_array_equal(batches[1][0], preprocess(imgs[2], md)[0])
    half = list(calibration_batches(imgs, md, batch=2, dtype=np.float16))
    assert half[0].dtype == np.float16 and np.array_equal(half[0], preprocess(imgs[:2], md, dtype=np.float16))
    with pytest.raises(ValueError, match="batch must be >= 1"):
        next(calibration_batches(imgs, md, batch=0))


def test_sidecar_roundtrip_and_missing(tmp_path):
    eng = tmp_path / "m.engine"
    eng.write_bytes(b"not a real engine")
    with pytest.raises(ArtifactError, match=r"missing sidecar m\.engine\.json"):
        read_sidecar(eng)
    side = write_sidecar(eng, _meta(output="nms"), ORIN)
    assert side == sidecar_path(eng) and side.name == "m.engine.json"
    back = read_sidecar(eng)
    assert back.engine == ORIN and back.output == "nms" and back.spec.fingerprint == RGS.fingerprint
    data = json.loads(side.read_text())
    del data["engine"]
    side.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="no 'engine' section"):
        check_engine_compat(read_sidecar(eng), eng, "10.3.0", ("Orin", "8.7"))


def test_cli_sidecar_then_inspect_engine(tmp_path):
    """`grimace convert sidecar` (as jetson/build_engine.sh calls it) with explicit build facts."""
    pytest.importorskip("onnx")
    import onnx
    from onnx import TensorProto, helper

    from convert.export import write_metadata
    from edge.cli import app

    g = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["output0"])],
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 64, 64])],
    )
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    write_metadata(proto, _meta(source_sha256="ab" * 32))
    model = tmp_path / "rgs.onnx"
    onnx.save(proto, str(model))
    eng = tmp_path / "rgs.engine"
    eng.write_bytes(b"\0" * 1000)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "convert",
            "sidecar",
            str(eng),
            "--onnx",
            str(model),
            "--precision",
            "fp16",
            "--tensorrt-version",
            "10.3.0",
            "--gpu-name",
            "Orin",
            "--compute-capability",
            "8.7",
            "--build-time",
            "321.5",
        ],
    )
    assert res.exit_code == 0, res.output
    md = read_sidecar(eng)
    assert md.engine.precision == "fp16" and md.engine.build_time_s == 321.5 and md.source_sha256 == "ab" * 32
    res = runner.invoke(app, ["convert", "inspect", str(eng)])
    assert res.exit_code == 0, res.output
    assert "TensorRT 10.3.0, fp16, GPU Orin (compute 8.7)" in res.output
    res = runner.invoke(app, ["convert", "sidecar", str(eng), "--onnx", str(model), "--precision", "fp8"])
    assert res.exit_code == 1 and "fp32, fp16 or int8" in res.output


@pytest.mark.skipif(HAS_TRT, reason="only meaningful where TensorRT is missing")
def test_trt_command_without_tensorrt_says_what_to_do(tmp_path):
    from edge.cli import app

    args = ["convert", "trt", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "m.engine")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1
    assert "module 'tensorrt'" in res.output and "jetson/build_engine.sh" in res.output
    assert "apt-get install python3-libnvinfer" in res.output and "Traceback" not in res.output


# ------------------------------------------------------------------ need TensorRT + an NVIDIA GPU
@needs_trt
@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_build_engine_and_check_against_onnx(tmp_path, precision):
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    import tensorrt

    from convert.export import export_onnx
    from convert.trt_engine import BuildOptions, build_engine, check_engine_against_onnx, trt_api
    from edge.backends import TensorRTBackend
    from tests.convert_fixtures import fused_checkpoint, square_images

    if precision == "int8" and not trt_api(tensorrt.__version__).calibrator:
        pytest.skip("TensorRT 10 builds INT8 from a QDQ model only (jetson/acceptance.sh covers it)")
    fused = fused_checkpoint(tmp_path, RGS, 128)  # the fused model, weights perturbed to give boxes
    onnx_path, _, _ = export_onnx(fused.model, fused.meta, tmp_path / "m.onnx", nms=True)
    imgs = square_images(16)  # textured, no letterbox border: no equal-score ties
    opts = BuildOptions(
        fp16=True,
        int8=precision == "int8",
        calib_images=imgs,
        calib_batch=1,
        timing_cache=tmp_path / "timing.cache",
    )
    md = build_engine(onnx_path, tmp_path / "m.engine", opts)
    assert md.engine.precision == precision
    assert (tmp_path / "timing.cache").stat().st_size > 0
    if precision == "int8":
        assert (tmp_path / "m.calib").is_file()
    with TensorRTBackend(tmp_path / "m.engine") as engine:
        assert engine.infer(np.zeros((1, 3, 128, 128), np.float32)).shape == (1, 300, 6 + RGS.ng)
    rep = check_engine_against_onnx(tmp_path / "m.engine", onnx_path, imgs[:4])
    print("\n".join(rep.lines()))
    assert rep.agreement.n_ref > 0 and rep.agreement.matched >= 0.9 * rep.agreement.n_ref


@needs_trt
@pytest.mark.trt
@pytest.mark.gpu
def test_runtime_refuses_engine_from_other_tensorrt(tmp_path):
    from edge.backends import TensorRTBackend

    eng = tmp_path / "old.engine"
    eng.write_bytes(b"\0")
    write_sidecar(eng, _meta(), EngineInfo("8.6.1", "Orin", "8.7", "fp16"))
    with pytest.raises(EngineMismatchError, match=r"built with TensorRT 8\.6\.1.*grimace convert trt"):
        TensorRTBackend(eng)


def _script_fixture(tmp_path, trt_build: str, device: str = "Orin", cc: str = "8.7", sms: str = "16"):
    """A dynamic-batch grimace ONNX, a stand-in trtexec (records its arguments, prints the version and
    device report trtexec prints, writes a dummy engine), a grimace wrapper running this checkout and a
    stand-in nvidia-smi that says "Orin (nvgpu)" as JetPack 6's does."""
    import sys
    from pathlib import Path

    pytest.importorskip("onnx")
    import onnx
    from onnx import TensorProto, helper

    from convert.export import write_metadata

    root = Path(__file__).resolve().parents[1]
    g = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["output0"])],
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 3, 64, 64])],
    )
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    write_metadata(proto, _meta(batch=None))
    model = tmp_path / "rgs.onnx"
    onnx.save(proto, str(model))
    argfile = tmp_path / "trtexec.args"
    fake = tmp_path / "trtexec"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f"printf '%s\\n' \"$@\" > {argfile}\n"
        f"echo '&&&& RUNNING TensorRT.trtexec [TensorRT v{trt_build}] # trtexec'\n"
        "echo '[12/02/2026-10:00:00] [I] === Device Information ==='\n"
        f"echo '[12/02/2026-10:00:00] [I] Selected Device: {device}'\n"
        f"echo '[12/02/2026-10:00:00] [I] Compute Capability: {cc}'\n"
        f"echo '[12/02/2026-10:00:00] [I] SMs: {sms}'\n"
        'for a in "$@"; do case $a in --saveEngine=*) echo engine > "${a#--saveEngine=}";; esac; done\n'
    )
    fake.chmod(0o755)
    grimace = tmp_path / "grimace"
    grimace.write_text(f'#!/usr/bin/env bash\ncd {root} && exec {sys.executable} -m edge.cli "$@"\n')
    grimace.chmod(0o755)
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/usr/bin/env bash\necho 'Orin (nvgpu), 8.7'\n")
    smi.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "HOME": str(tmp_path)}
    cmd = [
        "bash",
        str(root / "jetson/build_engine.sh"),
        str(model),
        "--trtexec",
        str(fake),
        "--grimace",
        str(grimace),
    ]
    return cmd, env, argfile


@pytest.mark.parametrize(("build", "version"), [("100300", "10.3.0"), ("8602", "8.6.2"), ("8611", "8.6.11")])
def test_build_engine_script_reads_both_version_schemes(tmp_path, build, version):
    """Defect 2: trtexec of TensorRT 8.x prints major*1000+minor*100+patch (8.6.2 -> v8602), 10.x prints
    major*10000+minor*100+patch (10.3.0 -> v100300)."""
    import subprocess

    cmd, env, _ = _script_fixture(tmp_path, build)
    res = subprocess.run([*cmd, "--fp16"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    md = read_sidecar(tmp_path / "rgs.engine")
    assert md.engine.tensorrt_version == version
    check_engine_compat(md, tmp_path / "rgs.engine", version + ".1", GpuInfo("Orin", "8.7", 16))


def test_build_engine_script_plumbing(tmp_path):
    """jetson/build_engine.sh: argument handling, trtexec flags, sidecar writing (defect 1: the GPU
    facts come from trtexec's CUDA device report, so the runtime's CUDA query accepts the engine).

    trtexec is replaced by a stand-in shell script; this tests the script's plumbing only, not a
    TensorRT build (that needs a Jetson/GPU: jetson/acceptance.sh)."""
    import shutil
    import subprocess

    if shutil.which("bash") is None:
        pytest.skip("bash not available")
    cmd, env, argfile = _script_fixture(tmp_path, "100300")
    res = subprocess.run([*cmd, "--fp16", "--dla", "1"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    args = argfile.read_text().split()
    (save,) = [a for a in args if a.startswith("--saveEngine=")]
    assert save.startswith(f"--saveEngine={tmp_path}/.rgs.engine.") and "--fp16" in args  # a temporary name
    assert "--memPoolSize=workspace:2048M" in args and "--useDLACore=1" in args
    assert f"--timingCacheFile={tmp_path / 'rgs.engine.timing.cache'}" in args
    assert "--minShapes=images:1x3x64x64" in args and "--maxShapes=images:8x3x64x64" in args
    md = read_sidecar(tmp_path / "rgs.engine")
    assert md.engine.tensorrt_version == "10.3.0" and md.engine.precision == "fp16"
    assert md.engine.dla_core == 1 and md.engine.gpu_name == "Orin" and md.engine.compute_capability == "8.7"
    assert md.engine.sm_count == 16
    # the runtime's view of the same GPU accepts it
    check_engine_compat(md, tmp_path / "rgs.engine", "10.3.0.30", GpuInfo("Orin", "8.7", 16))
    assert sorted(p.name for p in tmp_path.glob(".rgs.engine*")) == []  # no temporary file left
    # INT8 of a model without Q/DQ and without a calibration cache is refused with the commands that help
    res = subprocess.run([*cmd, "--int8"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 1 and "--calib-cache" in res.stderr and "QDQ" in res.stderr


def test_build_engine_script_never_leaves_an_engine_without_sidecar(tmp_path):
    """The sidecar step fails (a bad precision stands in for any failure): no engine appears."""
    import subprocess

    cmd, env, _ = _script_fixture(tmp_path, "100300")
    grimace = tmp_path / "grimace"
    grimace.write_text(grimace.read_text().replace("exec ", 'case "$2" in sidecar) exit 3 ;; esac; exec '))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 1 and "no engine was installed" in res.stderr
    assert not (tmp_path / "rgs.engine").exists() and not list(tmp_path.glob(".rgs.engine*"))
