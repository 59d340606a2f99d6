#!/usr/bin/env bash
# docs/your-own-animals.md at tiny scale: the page's commands, in its order, on synthetic frames, so the
# tutorial cannot rot. CI runs it (tests/test_tutorial.py); a lab can run it to check an install.
#
#   tests/tutorial/your_own_animals.sh [WORK_DIR]      (default: a new temporary folder)
#
# What differs from the page, only in scale and in what this offline machine cannot do:
#   * step 1 (labelling in CVAT) is stood in for by synthetic frames whose labels are written out as a
#     CVAT for images 1.1 export; every later step reads only that export and the frames;
#   * tiny models (YOLOv5n at 64 px, 1-2 epochs, the small from-scratch ViT) instead of --recipe seed,
#     which needs the pretrained ViT download; --device auto still picks CUDA where there is one;
#   * step 4b (the seed's released graders) needs the seed's files: not run here (tests/test_teacher.py
#     covers it with files in the seed's format);
#   * step 7 (TensorRT) runs only where TensorRT is installed (a Jetson); elsewhere it says so.
set -euo pipefail

G=${GRIMACE:-grimace}
W=${1:-$(mktemp -d -t grimace-tutorial.XXXXXX)}
mkdir -p "$W"
cd "$W"
export YOLO_OFFLINE=${YOLO_OFFLINE:-1}
step() { printf '\n== %s\n' "$*"; }

step "1. label (stand-in: synthetic frames + their labels as a CVAT for images 1.1 export)"
$G synth --scale rgs --n 36 --out synth --imgsz 96 --subjects 6 --graders 2 --format png \
    --val-frac 0.34 --test-frac 0.34 --seed 5
mkdir -p frames
python - <<'PY'
import shutil
from pathlib import Path

import cv2

from edge.scales import RGS
from train.data.annotations import Suggestion, SuggestedImage, write_cvat_xml
from train.data.format import image_to_label_path, read_labels

images = []
for p in sorted(Path("synth/images").rglob("*.png")):
    shutil.copy(p, Path("frames") / p.name)
    h, w = cv2.imread(str(p)).shape[:2]
    boxes = [Suggestion(b.unit, b.xyxy(w, h), b.grade) for b in read_labels(image_to_label_path(p), RGS)]
    images.append(SuggestedImage(p.name, w, h, boxes))
write_cvat_xml(images, RGS, "annotations.xml")
print(f"annotations.xml: {len(images)} images, {sum(len(i.boxes) for i in images)} boxes")
PY
cp synth/subjects.csv animals.csv

step "2. import and check"
$G data import-cvat annotations.xml --images frames/ --scale rgs --out data/lab --subjects animals.csv
$G data check data/lab
$G data stats data/lab

step "3. train the teacher (tiny; the page: --recipe seed --device auto)"
$G teacher train --data data/lab --out runs/teacher --device auto --detector n --imgsz 64 \
    --epochs-det 1 --vit tiny --epochs-vit 2 --shared-epochs 1 --det-batch 8 --no-pain --quiet

step "5. distill, export, validate"
$G distill annotate --teacher runs/teacher --data data/lab --out data/lab-distilled
$G train student --data data/lab-distilled --arch yolov5n --imgsz 64 --epochs 1 --batch 8 --weights none \
    --out runs/student --device auto
$G convert onnx runs/student --out model.onnx
$G train evaluate --model runs/student --data data/lab-distilled --split val --teacher runs/teacher
mkdir -p held_out_frames graders
cp data/lab/images/val/*.png held_out_frames/
$G score held_out_frames/ --model model.onnx --out results/ --no-progress
cp synth/graders/grader_1.csv synth/graders/grader_2.csv graders/
$G eval grades --pred results/frames.csv --human graders/*.csv --groups data/lab/subjects.csv --out report/ \
    --n-boot 100

step "6. label faster next round"
$G data export-preannotations held_out_frames/ --model model.onnx --out pre/ --select uncertain --limit 5

step "7. deploy"
if python -c "import tensorrt" 2>/dev/null; then
    $G convert trt model.onnx --fp16 --out model.engine
else
    echo "TensorRT is not installed here: 'grimace convert trt model.onnx --fp16 --out model.engine' runs on the Jetson"
fi

step "done: $W"
