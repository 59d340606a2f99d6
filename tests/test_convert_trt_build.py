"""``convert.trt_engine.build_engine`` against STAND-INS for TensorRT and cuda-python.

TensorRT has NOT run here (it cannot be installed; no GPU). ``tests/trt_standins.py`` stands in for
the TensorRT 8.6 / 10.x builder, parser, config and calibrator interface with the documented behaviour
our code depends on, so these tests check our calling sequence per version: network creation flags,
INT8 routes, calibration bytes and errors, timing cache, DLA, plugins, the engine+sidecar write.
The real check is ``jetson/acceptance.sh`` on a device.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from convert.trt_engine import (
    BuildOptions,
    EngineBuildError,
    build_engine,
    parse_trt_version,
    trt_api,
)
from edge.artifact import sidecar_path
from edge.backends import read_sidecar
from edge.deps import MissingDependencyError
from edge.postprocess import preprocess
from edge.scales import RGS
from tests.trt_standins import StandInTensorRT

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from convert.export import write_metadata  # noqa: E402
from edge.artifact import ModelMetadata  # noqa: E402

IMGSZ = 32


def _model(path: Path, *, half: bool = False, qdq: bool = False, plugin: bool = False, batch=None) -> Path:
    """A small ONNX graph with grimace metadata (the stand-in parser reads only its input and ops)."""
    dt = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    bdim = batch or "batch"
    nodes, inits = [], []
    x = "images"
    if qdq:
        inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.02]),
                 helper.make_tensor("z", TensorProto.INT8, [], [0])]
        nodes += [helper.make_node("QuantizeLinear", [x, "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        x = "dq"
    nodes.append(helper.make_node("Relu", [x], ["output0"]))
    if plugin:
        nodes.append(helper.make_node("EfficientNMS_TRT", ["output0"], ["nms"], name="nms"))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", dt, [bdim, 3, IMGSZ, IMGSZ])],
                          [helper.make_tensor_value_info("output0", dt, [bdim, 3, IMGSZ, IMGSZ])], inits)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    write_metadata(proto, ModelMetadata(scale=RGS.to_dict(), imgsz=(IMGSZ, IMGSZ), batch=batch, half=half))
    onnx.save(proto, str(path))
    return path


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40 + 3 * i, 50, 3), dtype=np.uint8) for i in range(n)]


# ------------------------------------------------------------------------- version rules (pure)
@pytest.mark.parametrize(
    ("text", "parsed"), [("10.3.0.30", (10, 3, 0)), ("8.6.2", (8, 6, 2)), ("10.7", (10, 7, 0))]
)
def test_parse_trt_version(text: str, parsed: tuple[int, int, int]) -> None:
    assert parse_trt_version(text) == parsed


def test_trt_api_per_version() -> None:
    old, new = trt_api("8.6.2"), trt_api("10.3.0.30")
    assert old.explicit_batch_flag and old.calibrator and old.fast_fp16_query
    assert not (new.explicit_batch_flag or new.calibrator or new.fast_fp16_query)
    with pytest.raises(EngineBuildError, match=r"older than 8\.6.*JetPack 6\.0.*build_engine\.sh"):
        trt_api("8.5.3")
    with pytest.raises(EngineBuildError, match=r"TensorRT 11.*tensorrt>=10,<11"):
        trt_api("11.0.0")


# ------------------------------------------------------------- defect 3: explicit batch on 8.6
@pytest.mark.parametrize(
    ("version", "flags"), [("8.6.2", "create_network(1)"), ("10.3.0", "create_network(0)")]
)
def test_network_is_explicit_batch_on_86_and_10(tmp_path, monkeypatch, version, flags) -> None:
    st = StandInTensorRT(version)
    st.install(monkeypatch)
    md = build_engine(_model(tmp_path / "m.onnx"), tmp_path / "m.engine", BuildOptions(fp16=True))
    assert flags in st.calls
    assert md.engine.tensorrt_version == version and md.engine.precision == "fp16"
    assert md.engine.sm_count == 16 and md.engine.gpu_name == "Orin"
    (build,) = st.builds
    assert build["flags"] == {"FP16"} and build["profiles"][0].shapes["images"][2] == (8, 3, IMGSZ, IMGSZ)


def test_no_deprecated_calls_on_10(tmp_path, monkeypatch) -> None:
    st = StandInTensorRT("10.3.0")
    st.install(monkeypatch)
    opts = BuildOptions(fp16=True, int8=True)
    build_engine(_model(tmp_path / "q.onnx", qdq=True), tmp_path / "q.engine", opts)
    assert st.deprecated_calls == []


# ------------------------------------------------------------- defect 4: cuda-python missing
def test_missing_cuda_python_fails_first_and_writes_nothing(tmp_path, monkeypatch) -> None:
    st = StandInTensorRT("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", st.module)
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    with pytest.raises(MissingDependencyError, match=r"cuda-python.*cuda-python>=12\.2,<13"):
        build_engine(_model(tmp_path / "m.onnx"), tmp_path / "m.engine", BuildOptions())
    assert not st.builds and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_cli_trt_without_cuda_python_prints_one_error_line(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from edge.cli import app

    st = StandInTensorRT("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", st.module)
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    res = CliRunner().invoke(app, ["convert", "trt", str(_model(tmp_path / "m.onnx")), "--out",
                                   str(tmp_path / "m.engine")])
    assert res.exit_code == 1, res.output
    assert "error:" in res.output and "cuda-python" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "m.engine").exists()


# ------------------------------------------------------- defect 5: bounds and the Jetson hint
def test_trt_extra_has_upper_bounds_and_jetson_hint() -> None:
    import tomllib

    from edge.backends import TENSORRT_HINT

    root = Path(__file__).resolve().parents[1]
    extra = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["trt"]
    reqs = {r.split(">")[0].split("<")[0].strip(): r for r in extra}
    assert "<11" in reqs["tensorrt"] and "<13" in reqs["cuda-python"], extra
    assert "apt-get install python3-libnvinfer" in TENSORRT_HINT


# ---------------------------------------------------------------- defect 8: calibration bytes
def test_calibration_feeds_the_network_input_dtype(tmp_path, monkeypatch) -> None:
    st = StandInTensorRT("8.6.2")
    st.install(monkeypatch)
    imgs = _images(4)
    model = _model(tmp_path / "h.onnx", half=True)
    md = build_engine(model, tmp_path / "h.engine",
                      BuildOptions(fp16=True, int8=True, calib_images=imgs, calib_batch=2))
    assert md.engine.precision == "int8"
    assert len(st.calibration_inputs) == 2
    meta = md
    for k, got in enumerate(st.calibration_inputs):
        want = preprocess(imgs[2 * k : 2 * k + 2], meta, dtype=np.float16)
        assert got.dtype == np.float16 and np.array_equal(got, want)
    assert (tmp_path / "h.calib").read_bytes() == b"STANDIN-CALIBRATION"


class _FailingImages(list):
    """Calibration images whose second batch cannot be read (like a file vanishing mid-run)."""

    def __getitem__(self, item):
        if isinstance(item, slice) and (item.start or 0) >= 2:
            raise OSError("frame_0003.jpg: read error")
        return super().__getitem__(item)


def test_calibration_error_is_raised_after_the_build(tmp_path, monkeypatch) -> None:
    st = StandInTensorRT("8.6.2")
    st.install(monkeypatch)
    with pytest.raises(EngineBuildError, match=r"calibration failed after 1 batch.*OSError: frame_0003\.jpg"):
        build_engine(_model(tmp_path / "m.onnx"), tmp_path / "m.engine",
                     BuildOptions(int8=True, calib_images=_FailingImages(_images(6)), calib_batch=2))
    assert len(st.calibration_inputs) == 1
    assert not (tmp_path / "m.engine").exists() and not sidecar_path(tmp_path / "m.engine").exists()


# ---------------------------------------------------------- INT8 routes (explicit quantization)
@pytest.mark.parametrize("version", ["8.6.2", "10.3.0"])
def test_qdq_model_builds_int8_without_calibrator(tmp_path, monkeypatch, version) -> None:
    st = StandInTensorRT(version)
    st.install(monkeypatch)
    md = build_engine(_model(tmp_path / "q.onnx", qdq=True), tmp_path / "q.engine",
                      BuildOptions(int8=True, calib_images=_images(4)))
    (build,) = st.builds
    assert "INT8" in build["flags"] and not build["calibrator"] and md.engine.precision == "int8"
    assert not st.calibration_inputs


def test_int8_without_qdq_on_10_says_how_to_quantize(tmp_path, monkeypatch) -> None:
    StandInTensorRT("10.3.0").install(monkeypatch)
    pattern = r"no Q/DQ nodes.*grimace convert onnx CHECKPOINT --int8 --calib"
    with pytest.raises(EngineBuildError, match=pattern):
        build_engine(_model(tmp_path / "m.onnx"), tmp_path / "m.engine",
                     BuildOptions(int8=True, calib_images=_images(8)))


# --------------------------------------------------------------- lesser: plugins, DLA, caches
def test_plugins_initialised_before_parsing_an_efficientnms_graph(tmp_path, monkeypatch) -> None:
    st = StandInTensorRT("10.3.0")
    st.install(monkeypatch)
    build_engine(_model(tmp_path / "p.onnx", plugin=True), tmp_path / "p.engine", BuildOptions(fp16=True))
    assert st.calls.index("init_libnvinfer_plugins") < st.calls.index("create_network(0)")
    st2 = StandInTensorRT("10.3.0")
    st2.install(monkeypatch)
    build_engine(_model(tmp_path / "n.onnx"), tmp_path / "n.engine", BuildOptions(fp16=True))
    assert "init_libnvinfer_plugins" not in st2.calls


def test_dla_forces_fp16_and_records_the_core(tmp_path, monkeypatch) -> None:
    st = StandInTensorRT("10.3.0")
    st.install(monkeypatch)
    md = build_engine(_model(tmp_path / "m.onnx"), tmp_path / "m.engine", BuildOptions(dla_core=1))
    (build,) = st.builds
    assert build["device"] == "DLA" and build["dla_core"] == 1
    assert {"FP16", "GPU_FALLBACK"} <= build["flags"] and md.engine.precision == "fp16"
    assert read_sidecar(tmp_path / "m.engine").engine.dla_core == 1
    with pytest.raises(EngineBuildError, match="DLA core 5 requested, device has 2"):
        build_engine(_model(tmp_path / "m.onnx"), tmp_path / "x.engine", BuildOptions(dla_core=5))


def test_timing_cache_checked_and_replaced_when_unusable(tmp_path, monkeypatch) -> None:
    st = StandInTensorRT("10.3.0")
    st.install(monkeypatch)
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"STANDIN-TIMING-CACHE 8.6.2")  # from another TensorRT: set_timing_cache refuses
    build_engine(_model(tmp_path / "m.onnx"), tmp_path / "m.engine", BuildOptions(timing_cache=cache))
    assert any("timing cache" in m and "unusable" in m for m in st.log)
    assert cache.read_bytes() == st.timing_cache_blob  # replaced by this build's cache
    st.log.clear()
    build_engine(_model(tmp_path / "m.onnx"), tmp_path / "m.engine", BuildOptions(timing_cache=cache))
    assert not any("timing cache" in m for m in st.log)  # the good cache is used as is


# -------------------------------------------------------------------- engine never without sidecar
def test_engine_is_never_left_without_its_sidecar(tmp_path, monkeypatch) -> None:
    import convert.trt_engine as te

    StandInTensorRT("10.3.0").install(monkeypatch)

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(te, "write_sidecar", disk_full)
    with pytest.raises(OSError, match="No space"):
        build_engine(_model(tmp_path / "m.onnx"), tmp_path / "m.engine", BuildOptions())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no engine, no temporary file
    monkeypatch.undo()
    StandInTensorRT("10.3.0").install(monkeypatch)
    build_engine(_model(tmp_path / "m.onnx"), tmp_path / "m.engine", BuildOptions())
    assert (tmp_path / "m.engine").read_bytes() == b"STANDIN-ENGINE"
    assert sidecar_path(tmp_path / "m.engine").is_file()
