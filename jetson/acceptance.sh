#!/usr/bin/env bash
# Acceptance check of grimace-edge on a new Jetson (or any NVIDIA GPU machine with TensorRT).
#
#   jetson/acceptance.sh MODEL.onnx --frames DIR            # run everything, print one report
#   jetson/acceptance.sh MODEL.onnx --frames DIR --dry-run  # print every step and command, run nothing
#
# Steps: record the platform (L4T/JetPack, TensorRT, CUDA device, cuda-python, ONNX Runtime); build the
# engine with the Python API (`grimace convert trt`) and with trtexec (jetson/build_engine.sh); check
# each engine against ONNX Runtime on your frames (`grimace convert check`); time the engines (trtexec's
# GPU compute time and the runtime's own inference call) and end to end (`grimace score` on the frames,
# per-stage times from the one Predictor); decode a phone-like clip at --fps 1 with the hardware
# decoder (GRIMACE_VIDEO_READER=gstreamer: nvv4l2decoder) and with PyAV on the CPU, per-frame decode
# time and CPU time of each. Every step runs even when an earlier one failed; the report
# at the end (also written to WORK/acceptance-report.txt) is what to paste back into the issue.
#
# Nothing here has run on a Jetson yet: this script is that first run.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    cat <<'EOF'
usage: jetson/acceptance.sh MODEL.onnx --frames DIR [options]

  --frames DIR        folder of real frames from your cameras (images; 32 are used by default)
  --n-frames N        frames used by the checks and timings (default 32)
  --precision P       fp16 (default), fp32 or int8 (int8: MODEL must be a QDQ model from
                      `grimace convert onnx --int8`, or TensorRT 8.6 calibrates on the frames)
  --work DIR          where engines, logs and the report go (default ./grimace-acceptance)
  --grimace PATH      grimace command (default: grimace on PATH, else /opt/grimace/venv/bin/grimace)
  --python PATH       the Python of that installation (default: beside the grimace command)
  --trtexec PATH      trtexec (default: on PATH, else /usr/src/tensorrt/bin/trtexec)
  --video FILE        a short phone clip (H.264/HEVC MP4) for the video-decoding step (default: 10 s
                      of 1080p60 H.264, a keyframe a second, made with PyAV's libx264 in WORK)
  --dry-run           print every step and the commands it would run; run nothing
  -h, --help          this help
EOF
}

die() { echo "acceptance.sh: error: $*" >&2; exit 2; }

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
case "$1" in -h|--help) usage; exit 0 ;; esac
MODEL="$1"; shift
FRAMES=""
N_FRAMES=32
PRECISION=fp16
WORK="$PWD/grimace-acceptance"
GRIMACE=""
PYTHON=""
TRTEXEC=""
VIDEO=""
DRY_RUN=0
need_arg() { [[ $# -ge 2 && -n "$2" ]] || die "option $1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --frames) need_arg "$@"; FRAMES="$2"; shift ;;
        --n-frames) need_arg "$@"; N_FRAMES="$2"; shift ;;
        --precision) need_arg "$@"; PRECISION="$2"; shift ;;
        --work) need_arg "$@"; WORK="$2"; shift ;;
        --grimace) need_arg "$@"; GRIMACE="$2"; shift ;;
        --python) need_arg "$@"; PYTHON="$2"; shift ;;
        --trtexec) need_arg "$@"; TRTEXEC="$2"; shift ;;
        --video) need_arg "$@"; VIDEO="$2"; shift ;;
        --dry-run) DRY_RUN=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done
[[ -n "$FRAMES" ]] || die "--frames DIR is required (real frames from your cameras)"
[[ "$N_FRAMES" =~ ^[1-9][0-9]*$ ]] || die "--n-frames must be a positive number, got $N_FRAMES"
case "$PRECISION" in fp16|fp32|int8) ;; *) die "--precision must be fp16, fp32 or int8, got $PRECISION" ;; esac
if [[ $DRY_RUN -eq 0 ]]; then
    [[ -f "$MODEL" ]] || die "$MODEL: no such ONNX file"
    [[ -d "$FRAMES" ]] || die "$FRAMES: not a folder of frames"
    MODEL="$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")"
    FRAMES="$(cd "$FRAMES" && pwd)"
    if [[ -n "$VIDEO" ]]; then
        [[ -f "$VIDEO" ]] || die "$VIDEO: no such video file"
        VIDEO="$(cd "$(dirname "$VIDEO")" && pwd)/$(basename "$VIDEO")"
    fi
    mkdir -p "$WORK"
    WORK="$(cd "$WORK" && pwd)"
fi

if [[ -z "$GRIMACE" ]]; then
    GRIMACE="$(command -v grimace || echo /opt/grimace/venv/bin/grimace)"
fi
if [[ -z "$PYTHON" ]]; then
    PYTHON="$(dirname "$GRIMACE")/python"
fi
if [[ -z "$TRTEXEC" ]]; then
    TRTEXEC="$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)"
fi
if [[ $DRY_RUN -eq 0 ]]; then
    [[ -x "$GRIMACE" ]] || die "$GRIMACE: grimace not found (install with jetson/install.sh or pass --grimace)"
    [[ -x "$PYTHON" ]] || die "$PYTHON: no Python beside grimace (pass --python)"
fi

API_ENGINE="$WORK/api.engine"
TRTEXEC_ENGINE="$WORK/trtexec.engine"
REPORT="$WORK/acceptance-report.txt"
TOTAL_STEPS=9
STEP=0
RESULTS=()     # "name: PASS|FAIL|SKIP detail" lines of the report
FACTS=()       # "key: value" lines of the report

step() {
    STEP=$((STEP + 1))
    echo "==> [${STEP}/${TOTAL_STEPS}] $*"
}

# Run a command with its output in a log; print it (dry run: only print). Returns the command's status.
run_logged() {
    local log="$1"; shift
    local shown="" arg
    for arg in "$@"; do  # an inline Python snippet is shown by name, not quoted line by line
        if [[ "$arg" == *$'\n'* ]]; then shown+="<inline Python, $(wc -l <<<"$arg") lines> "; else shown+="$(printf '%q ' "$arg")"; fi
    done
    if [[ $DRY_RUN -eq 1 ]]; then
        echo "    would run: ${shown% }"
        return 0
    fi
    echo "    + ${shown% }  (log: $log)"
    local rc=0
    "$@" >"$log" 2>&1 || rc=$?
    tail -n 15 "$log" | sed 's/^/      | /'
    return "$rc"
}

# Report lines (not in a dry run: nothing ran, so there is nothing to report).
result() { [[ $DRY_RUN -eq 1 ]] && return 0; RESULTS+=("$1"); echo "    -> $1"; }
fact() { [[ $DRY_RUN -eq 1 ]] && return 0; FACTS+=("$1: $2"); echo "    $1: $2"; }

# Python snippets run by the installation's interpreter (they import only the runtime, edge.*).
PY_PLATFORM='
import importlib.util as u
def v(m):
    try:
        return __import__(m).__version__
    except Exception as e:
        return f"not importable ({type(e).__name__})"
print("tensorrt (Python):", v("tensorrt"))
print("onnxruntime:", v("onnxruntime"))
try:
    import onnxruntime as ort
    print("onnxruntime providers:", ", ".join(ort.get_available_providers()))
except Exception:
    pass
cuda = "cuda.bindings" if u.find_spec("cuda") and u.find_spec("cuda.bindings") else ("cuda.cudart" if u.find_spec("cuda") else None)
print("cuda-python:", cuda or "not installed")
try:
    from edge.backends import gpu_identity
    g = gpu_identity()
    print(f"CUDA device 0: {g.name}, compute {g.compute_capability}, {g.sm_count} SMs")
except Exception as e:
    print("CUDA device 0: not detected:", e)
'
PY_TIME='
import statistics, sys, time
from pathlib import Path
import cv2, numpy as np
from edge.predictor import Predictor, load_model
engine, frames, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
exts = {".jpg", ".jpeg", ".png", ".bmp"}
imgs = [cv2.imread(str(p)) for p in sorted(frames.rglob("*")) if p.suffix.lower() in exts][:n]
imgs = [i for i in imgs if i is not None]
with load_model(engine) as model:
    pred = Predictor(model, batch=1)
    x, _ = pred.prepare(imgs[:1])
    for _ in range(10):
        model.infer(x)
    t = []
    for _ in range(100):
        t0 = time.perf_counter(); model.infer(x); t.append(time.perf_counter() - t0)
    print(f"infer batch 1: median {1e3 * statistics.median(t):.2f} ms, p90 {1e3 * sorted(t)[89]:.2f} ms")
    print(f"max batch of the engine: {model.backend.max_batch or model.backend.input_shape[0]}")
    t0 = time.perf_counter(); pred(imgs); dt = time.perf_counter() - t0
    print(f"Predictor on {len(imgs)} frames: {1e3 * dt / max(len(imgs), 1):.2f} ms/frame; {pred.times.summary()}")
'
# a phone-like clip: 1080p60 H.264, a keyframe every second, B-frames (PyAV's libx264)
PY_CLIP='
import sys
import av, numpy as np
out_path, seconds = sys.argv[1], int(sys.argv[2])
w, h, rate = 1920, 1080, 60
x = np.arange(w, dtype=np.int32)[None, :]
y = np.arange(h, dtype=np.int32)[:, None]
with av.open(out_path, "w") as out:
    s = out.add_stream("libx264", rate=rate, options={"preset": "veryfast", "g": str(rate), "keyint_min": str(rate), "sc_threshold": "0", "bf": "2"})
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    for i in range(seconds * rate):
        img = np.empty((h, w, 3), np.uint8)
        img[..., 0] = (x + 8 * i) % 256
        img[..., 1] = (y + 3 * i) % 256
        img[..., 2] = ((x + y) // 2 + 5 * i) % 256
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
            out.mux(p)
    for p in s.encode():
        out.mux(p)
print("wrote", out_path, seconds * rate, "frames")
'
# decode a clip at --fps with the reader GRIMACE_VIDEO_READER names; per-frame decode and CPU time
PY_VIDEO='
import os, statistics, sys, time
from edge.sources import Frame, iter_video
clip, fps = sys.argv[1], float(sys.argv[2])
reader = os.environ.get("GRIMACE_VIDEO_READER", "auto")
frames, errors = [], []
t0, c0 = time.perf_counter(), time.process_time()
for item in iter_video(clip, fps=fps):
    (frames if isinstance(item, Frame) else errors).append(item)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
for e in errors:
    print(f"{reader} error: {e}")
if frames:
    m, d, n = frames[-1].meta, [f.decode_s for f in frames], len(frames)
    mode, keys, dec = m.get("mode"), m.get("keyframes_only", "-"), m.get("decoder", m.get("reader"))
    idx = " ".join(str(f.index) for f in frames)
    print(f"{reader} frames: {n} at --fps {fps:g}, mode {mode}, keyframes only {keys}, decoder {dec}")
    print(f"{reader} decode per frame: median {1e3 * statistics.median(d):.1f} ms, first {1e3 * d[0]:.1f} ms, wall {1e3 * wall / n:.1f} ms, process CPU {1e3 * cpu / n:.1f} ms")
    print(f"{reader} indices: {idx}")
sys.exit(1 if errors or not frames else 0)
'

if [[ $DRY_RUN -eq 1 ]]; then
    echo "acceptance.sh: DRY RUN: nothing will be run"
else
    mkdir -p "$WORK"
fi
echo "acceptance.sh: model=$MODEL frames=$FRAMES precision=$PRECISION work=$WORK"

# ----------------------------------------------------------------------------------------- steps
step "Platform: L4T / JetPack, TensorRT, CUDA device, cuda-python, ONNX Runtime"
if [[ -r /etc/nv_tegra_release ]]; then
    fact "L4T" "$(head -n 1 /etc/nv_tegra_release | sed 's/^# //')"
else
    fact "L4T" "no /etc/nv_tegra_release (not a Jetson)"
fi
if [[ $DRY_RUN -eq 1 ]]; then
    echo "    would run: $PYTHON -c <platform facts: tensorrt, onnxruntime, cuda-python, CUDA device>"
    echo "    would run: $TRTEXEC --help (its first line names the TensorRT build)"
else
    while IFS= read -r line; do fact "${line%%: *}" "${line#*: }"; done < <("$PYTHON" -c "$PY_PLATFORM" 2>&1)
    if [[ -x "$TRTEXEC" ]]; then
        fact "trtexec" "$("$TRTEXEC" --help 2>&1 | grep -m1 -oE 'TensorRT v[0-9]+' || echo unknown)"
    else
        fact "trtexec" "not found at $TRTEXEC"
    fi
    fact "grimace" "$("$GRIMACE" --version 2>&1 | head -n 1)"
fi

step "TensorRT readiness of the ONNX model (no TensorRT needed)"
if run_logged "$WORK/check-trt.log" "$GRIMACE" convert check-trt "$MODEL"; then
    result "readiness: PASS"
else
    result "readiness: FAIL (see $WORK/check-trt.log)"
fi

trt_flags=()
case "$PRECISION" in
    fp16) trt_flags=(--fp16) ;;
    int8) trt_flags=(--fp16 --int8 --calib "$FRAMES") ;;
esac
step "Build the engine with the TensorRT Python API (grimace convert trt, $PRECISION)"
if run_logged "$WORK/build-api.log" "$GRIMACE" convert trt "$MODEL" --out "$API_ENGINE" "${trt_flags[@]}"; then
    result "build (Python API): PASS $(grep -m1 '^wrote' "$WORK/build-api.log" 2>/dev/null || true)"
else
    result "build (Python API): FAIL $(grep -m1 'error' "$WORK/build-api.log" 2>/dev/null || true)"
fi

sh_flags=()
case "$PRECISION" in
    fp16) sh_flags=(--fp16) ;;
    int8) sh_flags=(--fp16 --int8)
          if [[ -f "${API_ENGINE%.engine}.calib" ]]; then sh_flags+=(--calib-cache "${API_ENGINE%.engine}.calib"); fi ;;
esac
step "Build the engine with trtexec (jetson/build_engine.sh, $PRECISION)"
if run_logged "$WORK/build-trtexec.log" "$SCRIPT_DIR/build_engine.sh" "$MODEL" --out "$TRTEXEC_ENGINE" \
        --trtexec "$TRTEXEC" --grimace "$GRIMACE" "${sh_flags[@]}"; then
    result "build (trtexec): PASS $(grep -m1 '^built' "$WORK/build-trtexec.log" 2>/dev/null || true)"
else
    result "build (trtexec): FAIL $(tail -n 1 "$WORK/build-trtexec.log" 2>/dev/null || true)"
fi

for kind in api trtexec; do
    engine="$WORK/$kind.engine"
    step "Parity of the $kind engine against ONNX Runtime on $N_FRAMES frames (grimace convert check)"
    if [[ $DRY_RUN -eq 0 && ! -f "$engine" ]]; then
        result "parity ($kind): SKIP (no engine)"
        continue
    fi
    if run_logged "$WORK/check-$kind.log" "$GRIMACE" convert check "$engine" --onnx "$MODEL" \
            --images "$FRAMES" --n-images "$N_FRAMES"; then
        result "parity ($kind): PASS $(grep -m1 'after post-processing' "$WORK/check-$kind.log" 2>/dev/null | sed 's/^ *//' || true)"
    else
        result "parity ($kind): FAIL $(grep -m1 -E 'error|agrees' "$WORK/check-$kind.log" 2>/dev/null || true)"
    fi
done

step "Time the engines: trtexec GPU compute time and the runtime's inference call"
for kind in api trtexec; do
    engine="$WORK/$kind.engine"
    if [[ $DRY_RUN -eq 0 && ! -f "$engine" ]]; then
        result "timing ($kind): SKIP (no engine)"
        continue
    fi
    shape_args=()
    if [[ $DRY_RUN -eq 1 ]]; then
        echo "    (a dynamic batch axis adds --shapes=INPUT:1xCxHxW, read from grimace convert inspect)"
    else  # a dynamic batch axis needs a shape: batch 1 at the model's size
        input="$("$GRIMACE" convert inspect "$MODEL" | grep -m1 '^  graph input' || true)"
        name="$(sed -E 's/^  graph input +([^:]+):.*/\1/' <<<"$input")"
        dims="$(sed -E 's/.*\[(.*)\].*/\1/' <<<"$input" | tr -d " '")"
        IFS=, read -r _b c h w <<<"$dims"
        shape_args=(--shapes="${name}:1x${c}x${h}x${w}")
    fi
    if [[ -x "$TRTEXEC" || $DRY_RUN -eq 1 ]] && run_logged "$WORK/time-trtexec-$kind.log" "$TRTEXEC" \
            --loadEngine="$engine" "${shape_args[@]}" --warmUp=500 --duration=10; then
        fact "trtexec GPU compute ($kind)" "$(grep -m1 'GPU Compute Time' "$WORK/time-trtexec-$kind.log" 2>/dev/null | sed 's/.*GPU Compute Time: //' || true)"
    else
        result "timing trtexec ($kind): FAIL (see $WORK/time-trtexec-$kind.log)"
    fi
    if run_logged "$WORK/time-runtime-$kind.log" "$PYTHON" -c "$PY_TIME" "$engine" "$FRAMES" "$N_FRAMES"; then
        if [[ $DRY_RUN -eq 0 ]]; then
            while IFS= read -r line; do fact "runtime ($kind) ${line%%: *}" "${line#*: }"; done < "$WORK/time-runtime-$kind.log"
        fi
    else
        result "timing runtime ($kind): FAIL $(tail -n 1 "$WORK/time-runtime-$kind.log")"
    fi
done

step "End to end: grimace score on the frames with the Python-API engine (and with ONNX Runtime)"
for model in "$API_ENGINE" "$MODEL"; do
    tag="$(basename "$model")"
    out="$WORK/score-${tag%.*}"
    if [[ $DRY_RUN -eq 0 && ! -f "$model" ]]; then
        result "end to end ($tag): SKIP (no model)"
        continue
    fi
    start=$(date +%s.%N)
    if run_logged "$WORK/score-${tag%.*}.log" "$GRIMACE" score "$FRAMES" --model "$model" --out "$out" --overwrite; then
        if [[ $DRY_RUN -eq 0 ]]; then
            n="$(find "$FRAMES" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.bmp' \) | wc -l)"
            secs="$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')"
            fact "end to end ($tag)" "$n frames in ${secs} s (process start included)"
        fi
    else
        result "end to end ($tag): FAIL (see $WORK/score-${tag%.*}.log)"
    fi
done

step "Video decoding at --fps 1: hardware (GRIMACE_VIDEO_READER=gstreamer, nvv4l2decoder) and PyAV on the CPU"
clip="${VIDEO:-$WORK/clip-1080p60.mp4}"
if [[ -z "$VIDEO" ]]; then
    run_logged "$WORK/video-clip.log" "$PYTHON" -c "$PY_CLIP" "$clip" 10 || true
fi
if [[ $DRY_RUN -eq 0 && ! -f "$clip" ]]; then
    result "video decoding: SKIP (no clip: pass --video a phone clip, or install PyAV: pip install 'grimace-edge[video]')"
else
    for reader in gstreamer pyav; do
        if run_logged "$WORK/video-$reader.log" env GRIMACE_VIDEO_READER="$reader" "$PYTHON" -c "$PY_VIDEO" "$clip" 1; then
            if [[ $DRY_RUN -eq 0 ]]; then
                while IFS= read -r line; do
                    case "$line" in "$reader frames: "*|"$reader decode per frame: "*) fact "${line%%: *}" "${line#*: }" ;; esac
                done < "$WORK/video-$reader.log"
                result "video decoding ($reader): PASS"
            fi
        else
            result "video decoding ($reader): FAIL $(grep -m1 -E 'error' "$WORK/video-$reader.log" 2>/dev/null || tail -n 1 "$WORK/video-$reader.log" 2>/dev/null || true)"
        fi
    done
    if [[ $DRY_RUN -eq 0 && -f "$WORK/video-gstreamer.log" && -f "$WORK/video-pyav.log" ]]; then
        a="$(grep -m1 '^gstreamer indices: ' "$WORK/video-gstreamer.log" | sed 's/^gstreamer indices: //' || true)"
        b="$(grep -m1 '^pyav indices: ' "$WORK/video-pyav.log" | sed 's/^pyav indices: //' || true)"
        if [[ -n "$a" && "$a" == "$b" ]]; then
            result "video decoding: PASS the two readers kept the same frames"
        elif [[ -n "$a" && -n "$b" ]]; then
            result "video decoding: FAIL the readers kept different frames (gstreamer: ${a:0:80}; pyav: ${b:0:80})"
        fi
    fi
fi

[[ $STEP -eq $TOTAL_STEPS ]] || die "internal: ran $STEP steps, expected $TOTAL_STEPS"
if [[ $DRY_RUN -eq 1 ]]; then
    echo "acceptance.sh: dry run finished: ${STEP} steps listed, nothing run"
    exit 0
fi

{
    echo "==== grimace-edge acceptance report ($(date -u +%Y-%m-%dT%H:%M:%SZ)) ===="
    echo "model: $(basename "$MODEL")  precision: $PRECISION  frames: $N_FRAMES from $(basename "$FRAMES")"
    printf '%s\n' "${FACTS[@]}"
    echo "---- results ----"
    printf '%s\n' "${RESULTS[@]}"
    echo "==== end of report (paste everything between the ==== lines) ===="
} | tee "$REPORT"
if printf '%s\n' "${RESULTS[@]}" | grep -q ': FAIL'; then
    exit 1
fi
