#!/usr/bin/env bash
# Install grimace-edge as a service on an NVIDIA Jetson (JetPack 5 / 6, L4T R35 / R36).
#
#   sudo jetson/install.sh                 # install with defaults
#   jetson/install.sh --dry-run            # print every numbered step, change nothing
#   sudo jetson/install.sh --prefix /opt/grimace --user grimace --storage /var/lib/grimace
#
# What it does (each step is idempotent: running the script again, with or without --ort-gpu-wheel,
# gives the same installation; an onnxruntime-gpu once installed is never replaced by the CPU one):
#   a dedicated system user, a virtual environment that sees JetPack's system packages (TensorRT
#   Python bindings, OpenCV built with GStreamer), the grimace-edge package without torch, the
#   storage directory, /etc/grimace/watch.env (kept if present), the systemd units
#   (grimace-watch.service, grimace-diskguard.service/.timer), then enables them.
# See jetson/README.md for the whole procedure.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "${SCRIPT_DIR}/.." && pwd)"

# ------------------------------------------------------------------------------ defaults / options
PREFIX=/opt/grimace
SVC_USER=grimace
STORAGE=/var/lib/grimace
# GRIMACE_CONF_DIR / GRIMACE_UNIT_DIR move the two system folders (an image root, the kit's tests).
CONF_DIR="${GRIMACE_CONF_DIR:-/etc/grimace}"
UNIT_DIR="${GRIMACE_UNIT_DIR:-/etc/systemd/system}"
PYTHON=/usr/bin/python3
SOURCE="${REPO_DIR}"
EXTRAS=runtime
ORT_GPU_WHEEL=""
OPENCV_MODE=auto     # auto: use JetPack's OpenCV when it has GStreamer; pip: keep the PyPI wheel
ENABLE=1
START=0
DRY_RUN=0
SKIP_PLATFORM_CHECK=0
TEGRA_RELEASE="${GRIMACE_TEGRA_RELEASE:-/etc/nv_tegra_release}"
CUDA_VERSION_JSON="${GRIMACE_CUDA_VERSION_JSON:-/usr/local/cuda/version.json}"
MIN_PY_MINOR=10      # grimace-edge needs Python >= 3.10

usage() {
    cat <<EOF
Usage: $(basename "$0") [options]

Install grimace-edge and its systemd service on an NVIDIA Jetson.

Options:
  --dry-run               print every step (numbered) and the commands it would run; change nothing
  --prefix DIR            install root; the virtual environment goes to DIR/venv (default ${PREFIX})
  --user NAME             dedicated system user and group running the service (default ${SVC_USER})
  --storage DIR           storage directory: database, images, models (default ${STORAGE})
  --python PATH           interpreter for the virtual environment, >= 3.${MIN_PY_MINOR} (default ${PYTHON})
  --source SPEC           what pip installs: a checkout, a wheel or a requirement
                          (default: this checkout, ${REPO_DIR})
  --extras LIST           package extras, comma-separated (default ${EXTRAS}; never 'train')
  --ort-gpu-wheel PATH    onnxruntime-gpu wheel for this JetPack (file or URL; see jetson/README.md
                          for NVIDIA's Jetson index); replaces the CPU onnxruntime in the environment
                          and is kept by later runs without this option
  --pip-opencv            keep the PyPI opencv-python wheel (no GStreamer: no CSI cameras)
  --no-enable             install the units but do not enable them
  --start                 start grimace-watch now (needs a model at GRIMACE_MODEL)
  --skip-platform-check   install on a machine without /etc/nv_tegra_release (not a Jetson)
  -h, --help              this help
EOF
}

die() { echo "install.sh: error: $*" >&2; exit 1; }
warn() { echo "install.sh: warning: $*" >&2; }
note() { echo "    $*"; }

need_arg() { [[ $# -ge 2 && -n "$2" ]] || die "option $1 needs a value"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --prefix) need_arg "$@"; PREFIX="$2"; shift ;;
        --user) need_arg "$@"; SVC_USER="$2"; shift ;;
        --storage) need_arg "$@"; STORAGE="$2"; shift ;;
        --python) need_arg "$@"; PYTHON="$2"; shift ;;
        --source) need_arg "$@"; SOURCE="$2"; shift ;;
        --extras) need_arg "$@"; EXTRAS="$2"; shift ;;
        --ort-gpu-wheel) need_arg "$@"; ORT_GPU_WHEEL="$2"; shift ;;
        --pip-opencv) OPENCV_MODE=pip ;;
        --no-enable) ENABLE=0 ;;
        --start) START=1 ;;
        --skip-platform-check) SKIP_PLATFORM_CHECK=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

for p in "${PREFIX}" "${STORAGE}"; do
    [[ "$p" == /* ]] || die "paths must be absolute: $p"
    [[ "$p" != *[[:space:]]* ]] || die "paths must not contain spaces: $p"
done
[[ "${SVC_USER}" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "invalid user name: ${SVC_USER}"
[[ ",${EXTRAS}," != *,train,* ]] || die "the 'train' extra pulls in torch; a Jetson deployment needs none"

VENV="${PREFIX}/venv"
SHARE="${PREFIX}/share/jetson"
OUT_DIR="${STORAGE}/watch"
MODELS_DIR="${STORAGE}/models"
UNITS=(grimace-watch.service grimace-diskguard.service grimace-diskguard.timer)

# ------------------------------------------------------------------------------------ step machinery
TOTAL_STEPS=15
STEP=0
step() {
    STEP=$((STEP + 1))
    echo "==> [${STEP}/${TOTAL_STEPS}] $*"
}

# Run a command, or print it in --dry-run mode.
run() {
    local shown
    shown="$(printf '%q ' "$@")"
    if [[ ${DRY_RUN} -eq 1 ]]; then
        echo "    would run: ${shown% }"
    else
        echo "    + ${shown% }"
        "$@"
    fi
}

# systemctl needs a running systemd (always the case on a booted Jetson; not in a chroot or image build).
run_systemctl() {
    if [[ ${DRY_RUN} -eq 0 && ! -d /run/systemd/system ]]; then
        warn "systemd is not running here: skipped 'systemctl $*' (run it on the booted system)"
        return 0
    fi
    run systemctl "$@"
}

# Installed version of a distribution in the virtual environment ("" when absent or no venv yet).
dist_version() {
    [[ -x "${VENV}/bin/python" ]] || return 0
    "${VENV}/bin/python" -I -c 'import importlib.metadata as m, sys
try:
    print(m.version(sys.argv[1]))
except m.PackageNotFoundError:
    pass' "$1" 2>/dev/null || true
}

# Requirements of grimace-edge[EXTRAS] as installed, without onnxruntime (one per line). Python runs
# isolated (-I): run from a checkout, the current folder would otherwise put that checkout's metadata
# (grimace_edge.egg-info of an editable install) before the installed package's.
requirements_without_ort() {
    "${VENV}/bin/python" -I -c 'import importlib.metadata as m, re, sys
extras = set(sys.argv[1].split(","))
for req in m.requires("grimace-edge") or []:
    spec, _, marker = req.partition(";")
    name = re.split(r"[<>=!~\[ (]", spec.strip())[0].lower().replace("_", "-")
    wanted = re.search(r"extra\s*==\s*.([A-Za-z0-9_.-]+).", marker)
    if name == "onnxruntime" or (marker.strip() and (wanted is None or wanted.group(1) not in extras)):
        continue
    print(spec.strip())' "${EXTRAS}"
}

if [[ ${DRY_RUN} -eq 1 ]]; then
    echo "install.sh: DRY RUN: nothing will be changed"
elif [[ ${EUID} -ne 0 ]]; then
    die "run as root (sudo $0 ...), or preview with --dry-run"
fi
echo "install.sh: prefix=${PREFIX} user=${SVC_USER} storage=${STORAGE} python=${PYTHON} extras=${EXTRAS}"

# ------------------------------------------------------------------------------------------- steps
JETPACK_MAJOR=""
step "Check the platform: Jetson Linux (L4T) / JetPack from ${TEGRA_RELEASE}"
if [[ -r "${TEGRA_RELEASE}" ]]; then
    # e.g. "# R36 (release), REVISION: 4.0, GCID: ..., BOARD: generic, EABI: aarch64, DATE: ..."
    l4t_major="$(sed -n 's/^# R\([0-9][0-9]*\) (release).*/\1/p' "${TEGRA_RELEASE}" | head -n 1)"
    l4t_rev="$(sed -n 's/.*REVISION: \([0-9.]*\).*/\1/p' "${TEGRA_RELEASE}" | head -n 1)"
    [[ -n "${l4t_major}" ]] || die "cannot read the L4T release from ${TEGRA_RELEASE}"
    case "${l4t_major}" in
        35) JETPACK_MAJOR=5 ;;
        36) JETPACK_MAJOR=6 ;;
        *) warn "L4T R${l4t_major} is neither JetPack 5 (R35) nor 6 (R36); continuing untested" ;;
    esac
    note "L4T R${l4t_major}.${l4t_rev:-?} -> JetPack ${JETPACK_MAJOR:-unknown}"
elif [[ ${SKIP_PLATFORM_CHECK} -eq 1 ]]; then
    warn "${TEGRA_RELEASE} not found: not a Jetson; continuing (--skip-platform-check)"
elif [[ ${DRY_RUN} -eq 1 ]]; then
    warn "${TEGRA_RELEASE} not found: not a Jetson; a real run would stop here"
else
    die "${TEGRA_RELEASE} not found: this is not a Jetson running JetPack (use --skip-platform-check to override)"
fi

step "Check the Python interpreter (${PYTHON}, needs >= 3.${MIN_PY_MINOR} with venv)"
py_ok=0
if [[ -x "${PYTHON}" ]]; then
    py_ver="$("${PYTHON}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    note "Python ${py_ver}"
    if "${PYTHON}" -c "import sys; sys.exit(0 if sys.version_info >= (3, ${MIN_PY_MINOR}) else 1)"; then
        py_ok=1
        "${PYTHON}" -c 'import venv, ensurepip' 2>/dev/null \
            || warn "${PYTHON} lacks venv/ensurepip: apt-get install python3-venv (step 6 installs it)"
    fi
fi
if [[ ${py_ok} -eq 0 ]]; then
    msg="grimace-edge needs Python >= 3.${MIN_PY_MINOR}; ${PYTHON} is ${py_ver:-missing}."
    if [[ "${JETPACK_MAJOR}" == 5 ]]; then
        msg+=" JetPack 5 ships Python 3.8: use JetPack 6, the container (jetson/Dockerfile), or"
        msg+=" --python with a newer interpreter (JetPack's TensorRT bindings then do not load: use ONNX Runtime)."
    fi
    if [[ ${DRY_RUN} -eq 1 ]]; then warn "${msg} A real run would stop here."; else die "${msg}"; fi
fi

step "Check JetPack's Python packages visible to ${PYTHON} (TensorRT bindings, OpenCV with GStreamer)"
SYSTEM_CV2_GST=0
CUDA_PYTHON_REQ=""
if [[ ${py_ok} -eq 1 ]]; then
    if trt_ver="$("${PYTHON}" -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null)"; then
        note "tensorrt ${trt_ver} (TensorRT engines can run in-process)"
        # Engines need cuda-python for device memory, built for this CUDA (12.2 on JetPack 6.0, 12.6 on
        # 6.1/6.2): the version from the CUDA toolkit, else from the L4T revision.
        cuda_mm=""
        if [[ -r "${CUDA_VERSION_JSON}" ]]; then
            cuda_mm="$(sed -n '/"cuda"/,/}/s/.*"version" *: *"\([0-9]*\.[0-9]*\).*/\1/p' "${CUDA_VERSION_JSON}" | head -n 1)"
        fi
        if [[ -z "${cuda_mm}" && "${l4t_major:-}" == 36 ]]; then
            case "${l4t_rev:-}" in 2.*|3.*) cuda_mm=12.2 ;; *) cuda_mm=12.6 ;; esac
        fi
        if [[ "${cuda_mm}" =~ ^12\.([0-9]+)$ ]]; then
            CUDA_PYTHON_REQ="cuda-python>=${cuda_mm},<12.$((BASH_REMATCH[1] + 1))"
        else
            CUDA_PYTHON_REQ="cuda-python>=12.2,<13"
        fi
        note "CUDA ${cuda_mm:-unknown}: engines need ${CUDA_PYTHON_REQ} (installed in step 7)"
    else
        note "tensorrt Python bindings not found (apt-get install python3-libnvinfer for TensorRT engines; ONNX works without)"
    fi
    if "${PYTHON}" -c 'import cv2, re, sys; sys.exit(0 if re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()) else 1)' 2>/dev/null; then
        SYSTEM_CV2_GST=1
        note "system OpenCV has GStreamer: it will be used (CSI cameras via nvarguscamerasrc work)"
    else
        note "no system OpenCV with GStreamer: the PyPI opencv-python wheel is used (USB/RTSP/files only, no CSI)"
    fi
fi
[[ "${OPENCV_MODE}" == pip ]] && SYSTEM_CV2_GST=0

step "Create the system user and group '${SVC_USER}' (member of 'video' for cameras and the GPU)"
if getent group "${SVC_USER}" >/dev/null; then
    note "group ${SVC_USER} exists"
else
    run groupadd --system "${SVC_USER}"
fi
if id -u "${SVC_USER}" >/dev/null 2>&1; then
    note "user ${SVC_USER} exists"
else
    run useradd --system --gid "${SVC_USER}" --home-dir "${STORAGE}" --no-create-home \
        --shell /usr/sbin/nologin --comment "grimace-edge service" "${SVC_USER}"
fi
if getent group video >/dev/null; then
    run usermod --append --groups video "${SVC_USER}"
else
    warn "no 'video' group on this system: camera and GPU device access may fail"
fi

step "Create directories: ${PREFIX}, ${STORAGE} (models, watch), ${CONF_DIR}"
run install -d -m 0755 -o root -g root "${PREFIX}" "${SHARE}"
run install -d -m 0750 -o "${SVC_USER}" -g "${SVC_USER}" "${STORAGE}" "${OUT_DIR}" "${MODELS_DIR}"
run install -d -m 0755 -o root -g root "${CONF_DIR}"

step "Create the virtual environment ${VENV} (--system-site-packages: sees JetPack's tensorrt and cv2)"
if [[ -x "${VENV}/bin/python" ]]; then
    note "${VENV} exists: reused"
else
    if [[ ${py_ok} -eq 1 ]] && ! "${PYTHON}" -c 'import ensurepip' 2>/dev/null; then
        run apt-get update
        run apt-get install -y python3-venv
    fi
    run "${PYTHON}" -m venv --system-site-packages "${VENV}"
fi
run "${VENV}/bin/python" -m pip install --upgrade pip

step "Install grimace-edge[${EXTRAS}] from ${SOURCE} (no torch)"
ORT_GPU_VERSION="$(dist_version onnxruntime-gpu)"
if [[ -n "${ORT_GPU_WHEEL}" || -n "${ORT_GPU_VERSION}" ]]; then
    # onnxruntime and onnxruntime-gpu share the package folder 'onnxruntime/': letting pip resolve the
    # extras would install the CPU wheel over the GPU one. Install the package without dependencies,
    # then its requirements except onnxruntime (step 9 puts onnxruntime-gpu in place).
    note "onnxruntime-gpu ${ORT_GPU_VERSION:-(from --ort-gpu-wheel)}: the CPU onnxruntime is left out"
    run "${VENV}/bin/python" -m pip install --upgrade --no-deps "${SOURCE}[${EXTRAS}]"
    if [[ ${DRY_RUN} -eq 1 && ! -x "${VENV}/bin/python" ]]; then
        echo "    would run: ${VENV}/bin/python -m pip install --upgrade <requirements of grimace-edge[${EXTRAS}] except onnxruntime>"
    else
        mapfile -t reqs < <(requirements_without_ort)
        if [[ ${#reqs[@]} -gt 0 ]]; then
            run "${VENV}/bin/python" -m pip install --upgrade "${reqs[@]}"
        fi
    fi
else
    run "${VENV}/bin/python" -m pip install --upgrade "${SOURCE}[${EXTRAS}]"
fi
if [[ -n "${CUDA_PYTHON_REQ}" ]]; then
    run "${VENV}/bin/python" -m pip install "${CUDA_PYTHON_REQ}"
else
    note "no TensorRT bindings: cuda-python not needed (install it with python3-libnvinfer for engines)"
fi

step "Choose OpenCV: JetPack's build with GStreamer, or the PyPI wheel"
if [[ ${SYSTEM_CV2_GST} -eq 1 ]]; then
    # The PyPI wheels are built without GStreamer and would shadow the system cv2. JetPack's cv2 is
    # compiled against NumPy 1.x, so keep NumPy below 2 in the environment.
    run "${VENV}/bin/python" -m pip uninstall -y opencv-python opencv-python-headless opencv-contrib-python
    run "${VENV}/bin/python" -m pip install "numpy<2"
else
    note "keeping the PyPI opencv-python wheel (${OPENCV_MODE})"
fi

step "ONNX Runtime with CUDA for Jetson (optional --ort-gpu-wheel)"
ORT_CPU_VERSION="$(dist_version onnxruntime)"
ORT_GPU_VERSION="$(dist_version onnxruntime-gpu)"
if [[ -n "${ORT_GPU_WHEEL}" ]]; then
    # e.g. onnxruntime_gpu-1.20.0-cp310-cp310-linux_aarch64.whl -> 1.20.0
    wheel_version="$(basename "${ORT_GPU_WHEEL%%[?#]*}" | sed -n 's/^onnxruntime_gpu-\([^-]*\)-.*/\1/p')"
    [[ -n "${wheel_version}" ]] || die "--ort-gpu-wheel: ${ORT_GPU_WHEEL} is not an onnxruntime_gpu-VERSION-*.whl"
    if [[ -n "${ORT_CPU_VERSION}" ]]; then
        # removing the CPU wheel also deletes files of onnxruntime-gpu (same folder): reinstall it below
        run "${VENV}/bin/python" -m pip uninstall -y onnxruntime
    fi
    if [[ -z "${ORT_CPU_VERSION}" && "${ORT_GPU_VERSION}" == "${wheel_version}" ]]; then
        note "onnxruntime-gpu ${ORT_GPU_VERSION} from this wheel is installed: kept"
    else
        # --force-reinstall: put back every file, even when pip thinks this version is installed
        run "${VENV}/bin/python" -m pip install --force-reinstall --no-deps "${ORT_GPU_WHEEL}"
        run "${VENV}/bin/python" -m pip install "${ORT_GPU_WHEEL}"  # its dependencies, if missing
    fi
    if [[ ${SYSTEM_CV2_GST} -eq 1 ]]; then
        run "${VENV}/bin/python" -m pip install "numpy<2"
    fi
elif [[ -n "${ORT_GPU_VERSION}" && -n "${ORT_CPU_VERSION}" ]]; then
    warn "onnxruntime ${ORT_CPU_VERSION} (CPU) and onnxruntime-gpu ${ORT_GPU_VERSION} are both installed and share files: run again with --ort-gpu-wheel to repair"
elif [[ -n "${ORT_GPU_VERSION}" ]]; then
    note "onnxruntime-gpu ${ORT_GPU_VERSION} is installed: kept"
else
    note "skipped: CPU onnxruntime from PyPI stays (TensorRT engines do not need it)"
fi

step "Copy the kit's documents and config template to ${SHARE}"
run install -m 0644 "${SCRIPT_DIR}/README.md" "${SCRIPT_DIR}/cameras.md" "${SCRIPT_DIR}/watch.env" "${SHARE}/"

step "Install the site config ${CONF_DIR}/watch.env (kept if it exists)"
if [[ -e "${CONF_DIR}/watch.env" ]]; then
    note "${CONF_DIR}/watch.env exists: kept (the new template is ${SHARE}/watch.env)"
else
    run install -m 0640 -o root -g "${SVC_USER}" "${SCRIPT_DIR}/watch.env" "${CONF_DIR}/watch.env"
    if [[ "${STORAGE}" != /var/lib/grimace ]]; then
        run sed -i "s#/var/lib/grimace#${STORAGE}#g" "${CONF_DIR}/watch.env"
    fi
fi

step "Install the systemd units into ${UNIT_DIR}: ${UNITS[*]}"
for unit in "${UNITS[@]}"; do
    # Rewrite the install-time paths of the shipped units (prefix, user, storage).
    run install -m 0644 "${SCRIPT_DIR}/${unit}" "${UNIT_DIR}/${unit}"
    run sed -i -e "s#/opt/grimace#${PREFIX}#g" -e "s#/var/lib/grimace#${STORAGE}#g" \
        -e "s#^User=grimace\$#User=${SVC_USER}#" -e "s#^Group=grimace\$#Group=${SVC_USER}#" \
        "${UNIT_DIR}/${unit}"
done
run_systemctl daemon-reload

step "Check the installation (grimace --version, backends, disk guard)"
run "${VENV}/bin/grimace" --version
run "${VENV}/bin/python" -I -c "import importlib.util as u; print('backends:', ', '.join(m for m in ('onnxruntime', 'tensorrt') if u.find_spec(m)) or 'none')"
run "${VENV}/bin/python" -m edge.diskguard status "${OUT_DIR}"

step "Enable the services (grimace-diskguard.timer, grimace-watch.service)"
if [[ ${ENABLE} -eq 1 ]]; then
    run_systemctl enable --now grimace-diskguard.timer
    run_systemctl enable grimace-watch.service
else
    note "skipped (--no-enable)"
fi

step "Start grimace-watch (only with --start; needs the model named in ${CONF_DIR}/watch.env)"
if [[ ${START} -eq 1 ]]; then
    run_systemctl restart grimace-watch.service
else
    note "not started. Put your model in ${MODELS_DIR}, check ${CONF_DIR}/watch.env, then:"
    note "  sudo systemctl start grimace-watch && journalctl -u grimace-watch -f"
fi

[[ ${STEP} -eq ${TOTAL_STEPS} ]] || die "internal: ran ${STEP} steps, expected ${TOTAL_STEPS}"
if [[ ${DRY_RUN} -eq 1 ]]; then
    echo "install.sh: dry run finished: ${STEP} steps listed, nothing changed"
else
    echo "install.sh: done (${STEP} steps)"
fi
