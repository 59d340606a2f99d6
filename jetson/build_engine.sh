#!/usr/bin/env bash
# Build a TensorRT engine from a grimace ONNX model with trtexec (no Python TensorRT needed for the
# build), reusing a timing cache, then write the engine's sidecar JSON with `grimace convert sidecar`.
# Same result as `grimace convert trt`; run it ON the device that will run the engine.
#
# Written against TensorRT 10's trtexec flags (--memPoolSize replaces --workspace in 10.x).
# Not yet run on a Jetson: see docs/conversion.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: jetson/build_engine.sh MODEL.onnx [options]

  --out ENGINE          engine file (default: MODEL.engine); sidecar ENGINE.json is written beside it
  --fp16                allow FP16 kernels
  --int8                INT8; needs --calib-cache (trtexec cannot calibrate from images)
  --calib-cache FILE    calibration cache written by `grimace convert trt --int8 --calib IMAGES`
  --workspace MIB       workspace memory pool in MiB (default 2048)
  --dla N               build for DLA core N with GPU fallback
  --max-batch N         max batch of the optimization profile for dynamic-batch models (default 8)
  --trtexec PATH        trtexec binary (default: trtexec on PATH, else /usr/src/tensorrt/bin/trtexec)
  --grimace PATH        grimace command (default: grimace on PATH)
  -h, --help            this help
EOF
}

die() { echo "build_engine.sh: $*" >&2; exit 1; }

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
case "$1" in -h|--help) usage; exit 0 ;; esac
onnx="$1"; shift
[[ -f "$onnx" ]] || die "$onnx: no such ONNX file"

engine="${onnx%.onnx}.engine"
precision=fp32
fp16=0
int8=0
calib_cache=""
workspace=2048
dla=""
max_batch=8
trtexec_bin=""
grimace_bin="grimace"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) engine="${2:?--out needs a file}"; shift 2 ;;
    --fp16) fp16=1; shift ;;
    --int8) int8=1; shift ;;
    --calib-cache) calib_cache="${2:?--calib-cache needs a file}"; shift 2 ;;
    --workspace) workspace="${2:?--workspace needs MiB}"; shift 2 ;;
    --dla) dla="${2:?--dla needs a core number}"; shift 2 ;;
    --max-batch) max_batch="${2:?--max-batch needs a number}"; shift 2 ;;
    --trtexec) trtexec_bin="${2:?--trtexec needs a path}"; shift 2 ;;
    --grimace) grimace_bin="${2:?--grimace needs a path}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

if [[ -z "$trtexec_bin" ]]; then
  if command -v trtexec >/dev/null 2>&1; then
    trtexec_bin="$(command -v trtexec)"
  elif [[ -x /usr/src/tensorrt/bin/trtexec ]]; then
    trtexec_bin=/usr/src/tensorrt/bin/trtexec
  else
    die "trtexec not found; install TensorRT (JetPack) or pass --trtexec PATH"
  fi
fi
command -v "$grimace_bin" >/dev/null 2>&1 || die "'$grimace_bin' not found; install grimace-edge or pass --grimace PATH"

# Input name and shape come from the model's own metadata, not guesses.
info="$("$grimace_bin" convert inspect "$onnx")" || die "$onnx: not a grimace model (see the error above)"
input_line="$(grep -m1 '^  graph input' <<<"$info")" || die "$onnx: cannot read its input"
input_name="$(sed -E 's/^  graph input +([^:]+):.*/\1/' <<<"$input_line")"
dims="$(sed -E 's/.*\[(.*)\].*/\1/' <<<"$input_line" | tr -d " '")"
IFS=, read -r d_batch d_c d_h d_w <<<"$dims"

args=(--onnx="$onnx" --saveEngine="$engine" --memPoolSize=workspace:"${workspace}M"
      --timingCacheFile="${engine}.timing.cache" --skipInference)
if ! [[ "$d_batch" =~ ^[0-9]+$ ]]; then  # dynamic batch axis: one optimization profile
  args+=(--minShapes="${input_name}:1x${d_c}x${d_h}x${d_w}"
         --optShapes="${input_name}:1x${d_c}x${d_h}x${d_w}"
         --maxShapes="${input_name}:${max_batch}x${d_c}x${d_h}x${d_w}")
fi
if [[ $fp16 -eq 1 ]]; then
  args+=(--fp16); precision=fp16
fi
if [[ $int8 -eq 1 ]]; then
  [[ -n "$calib_cache" && -f "$calib_cache" ]] || die "--int8 needs --calib-cache FILE (make one with: grimace convert trt $onnx --int8 --calib IMAGES --out X.engine)"
  args+=(--int8 --calib="$calib_cache"); precision=int8
fi
if [[ -n "$dla" ]]; then
  args+=(--useDLACore="$dla" --allowGPUFallback)
fi

echo "+ $trtexec_bin ${args[*]}"
start=$(date +%s)
log="${engine}.build.log"
if ! "$trtexec_bin" "${args[@]}" >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  die "trtexec failed (full log: $log)"
fi
build_s=$(( $(date +%s) - start ))

# TensorRT version as trtexec reports it ("[TensorRT v100300]" -> 10.3.0)
v="$(grep -m1 -oE 'TensorRT v[0-9]+' "$log" | grep -oE '[0-9]+' || true)"
[[ -n "$v" ]] || die "cannot read the TensorRT version from $log"
trt_version="$(( v / 10000 )).$(( (v / 100) % 100 )).$(( v % 100 ))"

sidecar_args=(convert sidecar "$engine" --onnx "$onnx" --precision "$precision"
              --tensorrt-version "$trt_version" --build-time "$build_s")
if [[ -n "$dla" ]]; then
  sidecar_args+=(--dla "$dla")
fi
# GPU name and compute capability: nvidia-smi where it has them; otherwise grimace detects them
# with cuda-python (Jetson has no nvidia-smi with compute_cap).
if command -v nvidia-smi >/dev/null 2>&1; then
  if gpu="$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>/dev/null | head -n1)" && [[ -n "$gpu" ]]; then
    sidecar_args+=(--gpu-name "${gpu%%,*}" --compute-capability "$(tr -d ' ' <<<"${gpu##*,}")")
  fi
fi
"$grimace_bin" "${sidecar_args[@]}"
echo "built $engine ($precision, TensorRT $trt_version) in ${build_s}s; log: $log"
