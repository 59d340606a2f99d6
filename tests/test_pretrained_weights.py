"""Pretrained weights, proven offline: files are created in exactly the formats and places the libraries
look (an ultralytics-format ``yolov5su.pt`` in ultralytics' weights folder; a ViT saved with
``save_pretrained`` in a Hugging Face cache layout under ``HF_HUB_OFFLINE=1``), and training is shown to
start from them (not from random init). Missing files give a clear warning and random init."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")
pytest.importorskip("transformers")

from train.data.format import load_dataset  # noqa: E402
from train.teacher.detector import (  # noqa: E402
    find_pretrained,
    first_layer_fingerprint,
    train_detector,
    weights_dir,
    write_detector_dataset,
)
from train.teacher.vit import DEFAULT_VIT, Preprocess, build_vit, hf_cache_dir, train_classifier  # noqa: E402


@pytest.fixture
def ultra_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ultralytics' weights_dir setting at an empty temporary folder."""
    from ultralytics.utils import SETTINGS

    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setitem(SETTINGS, "weights_dir", str(folder))
    monkeypatch.chdir(tmp_path)  # ultralytics also looks in the current folder
    assert weights_dir() == folder
    return folder


def _det_data(tmp_path: Path) -> Path:
    from _teacher_helpers import make_dataset

    ds = make_dataset(tmp_path / "data", {"train": 6, "val": 2}, size=64, seed=3, blank=0)
    return write_detector_dataset(load_dataset(ds), tmp_path / "det_data")


def _write_yolov5u(path: Path, size: str) -> float:
    """An ultralytics checkpoint of yolov5{size}u built from yaml, with a recognisable first layer."""
    from ultralytics import YOLO

    m = YOLO(f"yolov5{size}.yaml")
    w = m.model.model[0].conv.weight
    with torch.no_grad():  # values exact in fp16 (ultralytics saves half precision)
        w.copy_((torch.arange(w.numel()).reshape(w.shape) % 7 - 3).float() / 16)
    m.save(str(path))
    return first_layer_fingerprint(YOLO(str(path)).model)


def _starts_from_file(tmp_path: Path, folder: Path, size: str) -> None:
    data_yaml = _det_data(tmp_path)
    name = f"yolov5{size}u.pt"
    want = _write_yolov5u(folder / name, size)
    assert find_pretrained(name) == folder / name
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "random init" warning may be raised
        summary = train_detector(data_yaml, tmp_path / "run", size=size, epochs=1, imgsz=64, batch=4,
                                 device="cpu", verbose=False)  # fmt: skip
    assert summary["init"] == str(folder / name)
    assert summary["init_fingerprint"] == pytest.approx(want, abs=1e-6)
    assert summary["device"] == "cpu"


@pytest.mark.slow
def test_detector_starts_from_yolov5su_in_the_ultralytics_weights_folder(
    tmp_path: Path, ultra_weights: Path
) -> None:
    """The default detector (YOLOv5s) from ``yolov5su.pt`` (about 20 s on 2 cores: marked slow)."""
    _starts_from_file(tmp_path, ultra_weights, "s")


def test_detector_starts_from_yolov5nu_in_the_ultralytics_weights_folder(
    tmp_path: Path, ultra_weights: Path
) -> None:
    """The same code path with the nano size (fast enough for every CI run)."""
    _starts_from_file(tmp_path, ultra_weights, "n")


def test_missing_yolov5u_warns_clearly_and_starts_from_random_init(
    tmp_path: Path, ultra_weights: Path
) -> None:
    data_yaml = _det_data(tmp_path)
    with pytest.warns(UserWarning) as rec:
        summary = train_detector(data_yaml, tmp_path / "run", size="n", epochs=1, imgsz=64, batch=4,
                                 device="cpu", verbose=False)  # fmt: skip
    msg = " ".join(str(w.message) for w in rec)
    assert f"no COCO-pretrained yolov5nu.pt in {ultra_weights}" in msg and "random init" in msg
    assert summary["init"] == "yolov5n.yaml"
    # the random start is not the file's pattern: a file written now would have another fingerprint
    want = _write_yolov5u(tmp_path / "other.pt", "n")
    assert summary["init_fingerprint"] != pytest.approx(want, abs=1e-3)


# --------------------------------------------------------------------------------------------- ViT
TINY_IN21K = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
              "image_size": 32, "patch_size": 8}  # fmt: skip


@pytest.fixture
def hf_cached_vit(monkeypatch: pytest.MonkeyPatch) -> object:
    """``google/vit-base-patch16-224-in21k`` (a tiny stand-in: a ViTModel, as that repository holds)
    saved with save_pretrained into the Hugging Face cache layout: models--org--name/{refs/main,
    snapshots/<commit>/}."""
    from transformers import ViTConfig, ViTModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(123)
    ref = ViTModel(ViTConfig(**TINY_IN21K), add_pooling_layer=True).eval()
    repo = hf_cache_dir() / ("models--" + DEFAULT_VIT.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert not repo.exists()
    ref.save_pretrained(str(repo / "snapshots" / commit))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    yield ref
    shutil.rmtree(repo)


def test_vit_loads_from_the_hugging_face_cache_offline(hf_cached_vit: object) -> None:
    model, init = build_vit(DEFAULT_VIT, 3, {0: "absent", 1: "moderate", 2: "obvious"})
    assert init == f"pretrained ({DEFAULT_VIT}, from the local Hugging Face cache)"
    ref = hf_cached_vit.state_dict()  # type: ignore[attr-defined]
    got = model.vit.state_dict()
    for k in ("embeddings.patch_embeddings.projection.weight", "embeddings.position_embeddings",
              "embeddings.cls_token"):  # fmt: skip
        assert torch.equal(got[k], ref[k]), k
    assert model.classifier.out_features == 3  # a fresh head
    # training starts from those weights: the first step moves them only a little
    prep = Preprocess(size=32)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    y = np.arange(8) % 3
    before = model.vit.embeddings.patch_embeddings.projection.weight.detach().clone()
    assert torch.equal(before, ref["embeddings.patch_embeddings.projection.weight"])
    train_classifier(model, prep, x, y, x[:3], y[:3], epochs=1, batch=8, lr=1e-4, optimizer="adamw")
    after = model.vit.embeddings.patch_embeddings.projection.weight.detach()
    assert float((after - before).abs().max()) < 0.01 < float(before.abs().max())


def test_vit_missing_from_the_cache_warns_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not (hf_cache_dir() / ("models--" + DEFAULT_VIT.replace("/", "--"))).exists()
    with pytest.warns(UserWarning, match=r"not in the local Hugging Face cache .*RANDOM weights"):
        _, init = build_vit(DEFAULT_VIT, 3)
    assert init.startswith("random init")


def test_teacher_seed_recipe_records_the_cached_pretrained_backbone(
    hf_cached_vit: object, ultra_weights: Path, tmp_path: Path
) -> None:
    """`teacher train --recipe seed` (default backbone google/vit-base-patch16-224-in21k) starts every
    grader from the cached weights and skips the shared backbone (only for random init)."""
    from _teacher_helpers import make_dataset

    from train.teacher.training import train_teacher

    data = make_dataset(tmp_path / "data", {"train": 6, "val": 3}, size=64, seed=2, blank=0)
    man = train_teacher(data, tmp_path / "run", detector="n", epochs_det=1, imgsz=64, det_batch=4,
                        recipe="seed", epochs_vit=1, vit_batch=8, pain=False, device="cpu",
                        verbose=False, echo=lambda s: None)  # fmt: skip
    assert man["settings"]["vit_init"] == f"pretrained ({DEFAULT_VIT}, from the local Hugging Face cache)"
    assert man["metrics"]["shared_backbone"] == {}
    assert man["device"]["device"] == "cpu" and man["device"]["amp"] is False
    assert all(m["device"] == "cpu" for m in man["metrics"]["graders"].values())


# -------------------------------------------------------------------------------- import-seed files
def test_import_seed_names_a_missing_grader_file(tmp_path: Path) -> None:
    from ultralytics.nn.tasks import DetectionModel

    from train.teacher.seed import SeedImportError, import_seed

    wdir = tmp_path / "seed"
    wdir.mkdir()
    det = DetectionModel("yolov5n.yaml", nc=3, verbose=False)
    det.names = {0: "ear", 1: "eye", 2: "nose"}
    torch.save({"model": det, "train_args": {"imgsz": 64}}, tmp_path / "best.pt")
    with pytest.raises(SeedImportError, match=r"eye_weights.bin: missing seed grader weights for 'eye'"):
        import_seed(wdir, tmp_path / "best.pt", tmp_path / "run")
