#!/usr/bin/env bash
# Entry point of the grimace-edge container (jetson/Dockerfile).
#
# With arguments, runs `grimace ARGS...` (e.g. `docker run IMAGE score /data --model M --out /out`).
# Without arguments, does what grimace-watch.service does: the disk-space guard's preflight, then
# `grimace watch` on GRIMACE_CAMERA / GRIMACE_MODEL / GRIMACE_OUT (+ GRIMACE_WATCH_ARGS, split at
# spaces). Pass the same variables as /etc/grimace/watch.env with `--env-file`.
set -euo pipefail

VENV="${GRIMACE_VENV:-/opt/grimace/venv}"

if [[ $# -gt 0 ]]; then
    exec "${VENV}/bin/grimace" "$@"
fi

: "${GRIMACE_CAMERA:=0}"
: "${GRIMACE_MODEL:=/var/lib/grimace/models/model.onnx}"
: "${GRIMACE_OUT:=/var/lib/grimace/watch}"
read -r -a extra_args <<< "${GRIMACE_WATCH_ARGS:-}"

mkdir -p "${GRIMACE_OUT}"
"${VENV}/bin/python" -m edge.diskguard preflight "${GRIMACE_OUT}"
exec "${VENV}/bin/grimace" watch --camera "${GRIMACE_CAMERA}" --model "${GRIMACE_MODEL}" \
    --out "${GRIMACE_OUT}" "${extra_args[@]}"
