"""Import the seed paper's published aRGS weights as a teacher run folder.

The seed released one ``ViTForImageClassification`` state dict per unit (``eye_weights.bin``,
``ear_weights.bin``, ``nose_weights.bin``; 3 labels, grades 0-2; saved by a transformers 4.x release,
whose parameter names differ from transformers 5) and a YOLO detector whose classes are
``0 ear, 1 eye, 2 nose`` (:data:`edge.scales.RGS_SEED`). This module loads the state dicts with
``torch.load(weights_only=True)``, renames legacy keys, infers the ViT architecture from the tensor
shapes (or takes a given config), and maps the detector classes by name onto the RGS scale
(``eye, ear, nose, whiskers``), so the teacher reports units in RGS order.

The detector must be an ultralytics-package checkpoint (it is read with ultralytics' weights-only
allow-list loader). A checkpoint written by the old ``ultralytics/yolov5`` repository code cannot be
read by the ultralytics package at all; such a detector has to be retrained (``grimace teacher train``)
or re-exported with the ultralytics package first.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edge.scales import RGS, RGS_SEED, ScaleSpec
from train.teacher.detector import save_detector
from train.teacher.teacher import save_teacher_parts, versions
from train.teacher.vit import ImageClassifier, Preprocess

SEED_FILES = {"eye": "eye_weights.bin", "ear": "ear_weights.bin", "nose": "nose_weights.bin"}
SEED_DETECTOR_CLASSES = RGS_SEED.unit_names
SEED_NORMALISE = (0.5, 0.5, 0.5)  # ViTImageProcessor of google/vit-base-patch16-224-in21k

_LEGACY = [
    (r"^vit\.encoder\.layer\.(\d+)\.attention\.attention\.query\.", r"vit.layers.\1.attention.q_proj."),
    (r"^vit\.encoder\.layer\.(\d+)\.attention\.attention\.key\.", r"vit.layers.\1.attention.k_proj."),
    (r"^vit\.encoder\.layer\.(\d+)\.attention\.attention\.value\.", r"vit.layers.\1.attention.v_proj."),
    (r"^vit\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"vit.layers.\1.attention.o_proj."),
    (r"^vit\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"vit.layers.\1.mlp.fc1."),
    (r"^vit\.encoder\.layer\.(\d+)\.output\.dense\.", r"vit.layers.\1.mlp.fc2."),
    (r"^vit\.encoder\.layer\.(\d+)\.layernorm_(before|after)\.", r"vit.layers.\1.layernorm_\2."),
]


class SeedImportError(RuntimeError):
    """The seed weights cannot be read or do not fit a ViT classifier."""


def convert_legacy_keys(state: dict[str, Any], target_keys: set[str]) -> dict[str, Any]:
    """Rename transformers-4.x ViT parameter names to the names of the installed transformers.

    Keys already in ``target_keys`` are kept; the unused pooler of ``ViTModel`` is dropped.
    """
    out = {}
    for k, v in state.items():
        if k in target_keys:
            out[k] = v
            continue
        if k.startswith("vit.pooler."):
            continue
        new = k
        for pat, rep in _LEGACY:
            new = re.sub(pat, rep, new)
        out[new] = v
    return out


def infer_vit_config(state: dict[str, Any], num_labels: int, heads: int | None = None) -> dict[str, Any]:
    """ViT architecture from the tensor shapes of a classifier state dict.

    The number of attention heads is not visible in the shapes: ``heads`` or ``hidden_size // 64``
    (ViT-Base: 12).
    """
    try:
        pe = state["vit.embeddings.patch_embeddings.projection.weight"]
        pos = state["vit.embeddings.position_embeddings"]
    except KeyError as e:
        raise SeedImportError(f"state dict has no {e.args[0]!r}; not a ViTForImageClassification") from None
    hidden, channels, patch = int(pe.shape[0]), int(pe.shape[1]), int(pe.shape[2])
    grid = round((int(pos.shape[1]) - 1) ** 0.5)
    layer_re = re.compile(r"vit\.(?:encoder\.layer|layers)\.(\d+)\.")
    layers = {int(m.group(1)) for k in state if (m := layer_re.match(k))}
    fc1_re = re.compile(r"(intermediate\.dense|mlp\.fc1)\.weight$")
    inter = next((int(v.shape[0]) for k, v in state.items() if fc1_re.search(k)), hidden * 4)
    return {
        "hidden_size": hidden,
        "num_channels": channels,
        "patch_size": patch,
        "image_size": grid * patch,
        "num_hidden_layers": len(layers),
        "intermediate_size": inter,
        "num_attention_heads": heads or max(1, hidden // 64),
        "num_labels": num_labels,
    }


def load_seed_grader(
    path: str | Path, unit: str, config: dict[str, Any] | str | Path | None = None, heads: int | None = None
) -> ImageClassifier:
    """Load one seed grader state dict (weights-only) into a ``ViTForImageClassification``.

    Args:
        path: ``<unit>_weights.bin``.
        unit: Unit name (for messages and labels).
        config: ViT config (dict or ``config.json`` path); default inferred from the tensors.
        heads: Attention heads when inferring the config.
    """
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    path = Path(path)
    if not path.exists():
        raise SeedImportError(f"{path}: missing seed grader weights for {unit!r}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise SeedImportError(f"{path}: cannot read as a weights-only state dict ({e})") from None
    if not isinstance(state, dict) or "classifier.weight" not in state:
        raise SeedImportError(f"{path}: not a ViTForImageClassification state dict (no classifier.weight)")
    n = int(state["classifier.weight"].shape[0])
    names = {0: "absent", 1: "moderate", 2: "obvious"} if n == 3 else {i: str(i) for i in range(n)}
    if isinstance(config, (str, Path)):
        cfg = ViTConfig.from_json_file(str(config))
        cfg.num_labels = n
    else:
        cfg = ViTConfig(**(config or infer_vit_config(state, n, heads)))
        cfg.num_labels = n
    cfg.id2label, cfg.label2id = names, {v: k for k, v in names.items()}
    model = ViTForImageClassification(cfg)
    target = set(model.state_dict())
    state = convert_legacy_keys(state, target)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SeedImportError(
            f"{path}: weights do not fit the ViT config (missing {sorted(missing)[:4]}, "
            f"unexpected {sorted(unexpected)[:4]})"
        )
    prep = Preprocess(size=int(cfg.image_size), mean=SEED_NORMALISE, std=SEED_NORMALISE, margin=0.0)
    return ImageClassifier(model.eval(), prep)


def load_ultralytics_detector(path: str | Path) -> tuple[dict[str, Any], dict[str, Any], list[str], int]:
    """Read an ultralytics detector checkpoint with ultralytics' weights-only allow-list loader.

    Returns:
        ``(state_dict, model_yaml, class names, imgsz)``.
    """
    from ultralytics.nn import tasks

    path = Path(path)
    if not path.exists():
        raise SeedImportError(f"{path}: detector checkpoint not found")
    if not getattr(getattr(tasks, "_SafeLoad", None), "SUPPORTED", False):
        raise SeedImportError(
            f"{path}: this ultralytics/torch install cannot load checkpoints weights-only; refusing to "
            "unpickle an untrusted file"
        )
    torch_safe_load = tasks.torch_safe_load
    try:
        ckpt, _ = torch_safe_load(str(path), safe_only=True)
    except (TypeError, ModuleNotFoundError) as e:
        raise SeedImportError(
            f"{path}: cannot read as an ultralytics detector checkpoint weights-only ({e}). A checkpoint "
            "from the old ultralytics/yolov5 repository must be retrained or re-exported with the "
            "ultralytics package first."
        ) from None
    model = ckpt.get("ema") or ckpt.get("model")
    if model is None or not hasattr(model, "state_dict"):
        raise SeedImportError(f"{path}: checkpoint holds no model")
    names = getattr(model, "names", None) or {}
    names = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    args = ckpt.get("train_args") or {}
    imgsz = int(args.get("imgsz", 640)) if isinstance(args.get("imgsz", 640), int) else 640
    return model.float().state_dict(), dict(model.yaml), names, imgsz


def import_seed(
    weights: str | Path,
    detector: str | Path,
    out: str | Path,
    *,
    classes: list[str] | None = None,
    scale: ScaleSpec = RGS,
    vit_config: str | Path | None = None,
    heads: int | None = None,
    imgsz: int | None = None,
) -> Path:
    """Build a teacher run folder from the seed's released weights.

    Args:
        weights: Folder with ``eye_weights.bin``, ``ear_weights.bin``, ``nose_weights.bin``.
        detector: ultralytics detector checkpoint (``best.pt``).
        out: Run folder to write.
        classes: Detector class names in class order; default the seed's ``ear, eye, nose``.
        scale: Scale the units are mapped onto (default RGS).
        vit_config: ViT ``config.json`` (default: inferred from the tensors).
        heads: Attention heads when inferring (default ``hidden_size // 64``).
        imgsz: Detector input size (default from the checkpoint, else 640).

    Returns:
        The run folder.
    """
    weights, out = Path(weights), Path(out)
    if not weights.is_dir():
        raise SeedImportError(f"{weights}: not a folder with the seed's *_weights.bin files")
    classes = list(classes or SEED_DETECTOR_CLASSES)
    state, yaml_cfg, names, ck_imgsz = load_ultralytics_detector(detector)
    nc = int(yaml_cfg.get("nc", len(names) or len(classes)))
    if nc != len(classes):
        raise SeedImportError(f"{detector}: detector has {nc} classes but classes {classes} were given")
    generic = all(str(n).isdigit() or str(n).startswith("class") for n in names)
    if names and not generic and list(names) != classes:
        raise SeedImportError(f"{detector}: detector class names {names} differ from expected {classes}")
    for c in classes:
        scale.unit_index(c)
    graders = {}
    for unit, fname in SEED_FILES.items():
        if unit in classes:
            graders[unit] = load_seed_grader(weights / fname, unit, vit_config, heads)
    save_detector(out, state, yaml_cfg, classes, imgsz or ck_imgsz)
    manifest = {
        "versions": versions(),
        "source": {"seed_weights": str(weights.resolve()), "detector": str(Path(detector).resolve())},
        "settings": {"detector_classes": classes, "normalise": list(SEED_NORMALISE), "margin": 0.0},
        "metrics": {},
    }
    save_teacher_parts(out, scale, graders, None, manifest)
    return out
