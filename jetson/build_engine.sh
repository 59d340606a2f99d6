#!/usr/bin/env bash
# Build a TensorRT engine from a grimace ONNX model with trtexec (no Python TensorRT needed for the
# build), reusing a timing cache, then write the engine's sidecar JSON with `grimace convert sidecar`.
# Same result as `grimace convert trt`; run it ON the device that will run the engine.
#
# Written against trtexec of TensorRT 8.6 (JetPack 6.0) and 10.x (JetPack 6.1/6.2); both take
# --memPoolSize, --timingCacheFile and --skipInference. Not yet run on a Jetson: jetson/acceptance.sh
# is the check to run there (see jetson/README.md).
#
# The engine is built to a temporary name; the sidecar is written for it, renamed beside the final
# name, then the engine is renamed into place: there is never an engine without its sidecar. The GPU
# facts of the sidecar (CUDA name, compute capability, SM count) come from trtexec's own device report,
# which is CUDA's, like the runtime's check (nvidia-smi says "Orin (nvgpu)" where CUDA says "Orin").
set -euo pipefail

usage() {
  cat <<'EOF'
usage: jetson/build_engine.sh MODEL.onnx [options]

  --out ENGINE          engine file (default: MODEL.engine); sidecar ENGINE.json is written beside it
  --fp16                allow FP16 kernels
  --int8                INT8: a QDQ model (grimace convert onnx --int8) needs nothing else; other
                        models need --calib-cache (trtexec cannot calibrate from images)
  --calib-cache FILE    calibration cache written by `grimace convert trt --int8 --calib IMAGES`
                        (TensorRT 8.6)
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

# TensorRT's build number as trtexec prints it ("[TensorRT v8602]", "[TensorRT v100300]") -> 8.6.2 / 10.3.0.
# TensorRT 8.x encodes major*1000 + minor*100 + patch; TensorRT 10+ encodes major*10000 + minor*100 + patch.
trt_version_from_build() {
  local v="$1"
  [[ "$v" =~ ^[0-9]+$ ]] || return 1
  v=$((10#$v))
  if (( v >= 100000 )); then
    echo "$(( v / 10000 )).$(( (v / 100) % 100 )).$(( v % 100 ))"
  elif (( v >= 1000 )); then
    echo "$(( v / 1000 )).$(( (v / 100) % 10 )).$(( v % 100 ))"
  else
    return 1
  fi
}

# "[I] Compute Capability: 8.7" -> 8.7 (trtexec's "=== Device Information ===" block)
device_fact() {
  sed -nE "s/.*\] $1: *(.*[^ ]) *\$/\\1/p" "$2" | head -n1
}

engine_dir="$(dirname "$engine")"
engine_base="$(basename "$engine")"
mkdir -p "$engine_dir"
tmp_engine="$(mktemp "${engine_dir}/.${engine_base}.XXXXXX")"
cleanup() { rm -f "$tmp_engine" "${tmp_engine}.json"; }
trap cleanup EXIT

args=(--onnx="$onnx" --saveEngine="$tmp_engine" --memPoolSize=workspace:"${workspace}M"
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
  args+=(--int8); precision=int8
  if [[ -n "$calib_cache" ]]; then
    [[ -f "$calib_cache" ]] || die "$calib_cache: no such calibration cache"
    args+=(--calib="$calib_cache")
  elif ! grep -q 'QuantizeLinear' <<<"$info"; then  # explicit quantization: scales are in the graph
    die "--int8 needs a QDQ model (grimace convert onnx CHECKPOINT --int8 --calib FRAMES) or --calib-cache FILE (make one with: grimace convert trt $onnx --int8 --calib IMAGES --out X.engine on TensorRT 8.6)"
  fi
fi
if [[ -n "$dla" ]]; then
  args+=(--useDLACore="$dla" --allowGPUFallback)
  if [[ $fp16 -eq 0 && $int8 -eq 0 ]]; then  # DLA runs only FP16 and INT8 layers
    args+=(--fp16); precision=fp16
  fi
fi

echo "+ $trtexec_bin ${args[*]}"
start=$(date +%s)
log="${engine}.build.log"
if ! "$trtexec_bin" "${args[@]}" >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  die "trtexec failed (full log: $log)"
fi
build_s=$(( $(date +%s) - start ))
[[ -s "$tmp_engine" ]] || die "trtexec wrote no engine (full log: $log)"

v="$(grep -m1 -oE 'TensorRT v[0-9]+' "$log" | grep -oE '[0-9]+' || true)"
trt_version="$(trt_version_from_build "$v")" || die "cannot read the TensorRT version from $log (got '${v}')"

sidecar_args=(convert sidecar "$tmp_engine" --onnx "$onnx" --precision "$precision"
              --tensorrt-version "$trt_version" --build-time "$build_s")
if [[ -n "$dla" ]]; then
  sidecar_args+=(--dla "$dla")
fi
gpu_name="$(device_fact 'Selected Device' "$log")"
gpu_cc="$(device_fact 'Compute Capability' "$log")"
gpu_sms="$(device_fact 'SMs' "$log")"
if [[ -n "$gpu_name" && -n "$gpu_cc" ]]; then
  sidecar_args+=(--gpu-name "$gpu_name" --compute-capability "$gpu_cc")
  if [[ "$gpu_sms" =~ ^[0-9]+$ ]]; then
    sidecar_args+=(--sm-count "$gpu_sms")
  fi
fi  # otherwise `grimace convert sidecar` detects the GPU with cuda-python, as the runtime does
"$grimace_bin" "${sidecar_args[@]}" || die "could not write the sidecar; no engine was installed"
mv -f "${tmp_engine}.json" "${engine}.json"
mv -f "$tmp_engine" "$engine"
trap - EXIT
echo "built $engine ($precision, TensorRT $trt_version, ${gpu_name:-GPU} ${gpu_cc:+compute $gpu_cc}${gpu_sms:+, $gpu_sms SMs}) in ${build_s}s; log: $log"
