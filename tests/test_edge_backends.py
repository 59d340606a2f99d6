"""edge.backends: ONNX Runtime backend on a tiny real ONNX graph, metadata checks, predictor, TensorRT
compatibility rules (the TensorRT engine itself only where tensorrt is installed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.artifact import ArtifactError, EngineInfo, ModelMetadata, sidecar_path
from edge.backends import EngineMismatchError, InputError, check_engine_compat, read_sidecar
from edge.predictor import Predictor, load_model
from edge.quality import frame_quality
from edge.scales import GOAT, RGS, ScaleMismatchError
from tests.tiny_onnx import build_tiny_onnx, face_image

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def rgs_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_onnx(tmp_path_factory.mktemp("m") / "rgs.onnx", RGS, imgsz=320)


def test_onnx_backend_checks_input_shape_and_dtype(rgs_model: Path) -> None:
    with load_model(rgs_model, scale="rgs", threads=1) as m:
        assert m.spec.fingerprint == RGS.fingerprint and m.meta.imgsz == (320, 320)
        out = m.infer(np.zeros((1, 3, 320, 320), np.float32))
        assert out.shape == (1, 400, 4 + RGS.nc + RGS.nc * RGS.ng) and out.dtype == np.float32
        with pytest.raises(InputError, match=r"expected shape \(1, 3, 320, 320\), got \(1, 3, 256, 320\)"):
            m.infer(np.zeros((1, 3, 256, 320), np.float32))
        with pytest.raises(InputError, match="expected dtype float32, got float64"):
            m.infer(np.zeros((1, 3, 320, 320), np.float64))
        with pytest.raises(InputError, match="expected shape"):
            m.infer(np.zeros((2, 3, 320, 320), np.float32))


def test_dynamic_batch_model(tmp_path: Path) -> None:
    p = build_tiny_onnx(tmp_path / "dyn.onnx", RGS, imgsz=160, batch=None)
    with load_model(p) as m:
        assert m.backend.input_shape[0] is None
        assert m.infer(np.zeros((3, 3, 160, 160), np.float32)).shape[0] == 3
        pred = Predictor(m)
        res = pred([face_image(RGS, 240, 320, size=24)] * 3)
        assert len(res) == 3 and pred.times.frames == 3


def test_scale_mismatch_and_bad_metadata(rgs_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ScaleMismatchError, match=r"made for scale 'rgs'.*'goat'"):
        load_model(rgs_model, scale="goat")
    with pytest.raises(ScaleMismatchError):
        load_model(rgs_model, scale=GOAT)
    import onnx

    m = onnx.load(str(rgs_model))
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "nometa.onnx"))
    with pytest.raises(ArtifactError, match="no 'grimace' metadata"):
        load_model(tmp_path / "nometa.onnx")
    wrong = build_tiny_onnx(tmp_path / "wrong.onnx", RGS, imgsz=320, meta_overrides={"imgsz": (640, 640)})
    with pytest.raises(ArtifactError, match="does not match metadata imgsz"):
        load_model(wrong)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.onnx")
    (tmp_path / "x.pt").write_bytes(b"0")
    with pytest.raises(ArtifactError, match="unknown model type"):
        load_model(tmp_path / "x.pt")


def test_predictor_scores_a_synthetic_face(rgs_model: Path) -> None:
    with load_model(rgs_model) as m:
        pred = Predictor(m, quality_fn=frame_quality)
        good, no_nose = face_image(RGS), face_image(RGS, drop=("nose",))
        r_good, r_missing = pred([good, no_nose], ["good.png", "nonose.png"])
    assert r_good.scored and r_good.unit_counts == {"eye": 2, "ear": 2, "nose": 1, "whiskers": 1}
    assert r_good.source == "good.png" and 0 < r_good.quality <= 1
    assert set(r_good.meta["quality_parts"]) >= {"sharpness", "frontalness", "completeness"}
    # boxes are in original pixels: the two eye boxes straddle the face centre (x=320) at y=240
    eyes = r_good.detections.xyxy[r_good.selected[:2]]
    cx = (eyes[:, 0] + eyes[:, 2]) / 2
    assert cx.min() < 320 < cx.max() and np.all(np.abs((eyes[:, 1] + eyes[:, 3]) / 2 - 240) < 20)
    assert not r_missing.scored and "nose" in r_missing.abstained
    assert r_missing.quality < r_good.quality
    t = pred.times.per_frame_ms()
    assert set(t) == {"decode", "pre", "infer", "post"} and t["infer"] > 0 and t["pre"] > 0


def test_min_quality_abstains(rgs_model: Path) -> None:
    with load_model(rgs_model) as m:
        res = Predictor(m, quality_fn=frame_quality, min_quality=0.99)([face_image(RGS)])[0]
    assert not res.scored and "quality" in res.abstained


def _meta(**engine: object) -> ModelMetadata:
    info = {
        "tensorrt_version": "10.3.0",
        "gpu_name": "Orin",
        "compute_capability": "8.7",
        "precision": "fp16",
    }
    info.update(engine)
    return ModelMetadata(scale=RGS.to_dict(), engine=EngineInfo(**info))


def test_engine_compat_refuses_other_trt_or_gpu() -> None:
    p = Path("/models/rgs.engine")
    check_engine_compat(_meta(), p, "10.3.0", ("Orin", "8.7"))
    # tensorrt.__version__ has a 4th (build) part that trtexec does not print: same release
    check_engine_compat(_meta(), p, "10.3.0.30", ("Orin", "8.7"))
    with pytest.raises(
        EngineMismatchError, match=r"TensorRT 10\.3\.0 but this machine has TensorRT 10\.7\.0"
    ):
        check_engine_compat(_meta(), p, "10.7.0", ("Orin", "8.7"))
    with pytest.raises(EngineMismatchError, match=r"compute capability 8\.7.*8\.9.*grimace convert trt"):
        check_engine_compat(_meta(), p, "10.3.0", ("NVIDIA GeForce RTX 4090", "8.9"))
    with pytest.raises(ArtifactError, match="no 'engine' section"):
        check_engine_compat(ModelMetadata(scale=RGS.to_dict()), p, "10.3.0", ("Orin", "8.7"))


def test_engine_sidecar_required_and_scale_checked(tmp_path: Path) -> None:
    eng = tmp_path / "m.engine"
    eng.write_bytes(b"not really an engine")
    with pytest.raises(ArtifactError, match=r"missing sidecar m\.engine\.json"):
        load_model(eng)
    sidecar_path(eng).write_text(json.dumps(_meta().to_dict()))
    assert read_sidecar(eng).engine.gpu_name == "Orin"
    with pytest.raises(ScaleMismatchError):
        load_model(eng, scale="goat")
