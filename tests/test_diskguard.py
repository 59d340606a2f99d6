"""Disk-space guard: rotation never touches the database, thresholds, refusal to start, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.diskguard import (
    DiskGuard,
    DiskSpaceError,
    GuardConfig,
    Usage,
    is_protected,
    main,
    parse_size,
    rotate,
)

REPO = Path(__file__).resolve().parents[1]
MiB = 1024**2
NOW = time.time()  # file ages are relative to the real clock (the CLI uses it)


class FakeDisk:
    """A file system of ``total`` bytes whose free space grows as files under ``root`` are deleted."""

    def __init__(self, root: Path, total: int, free: int) -> None:
        self.root, self.total, self.base_free = root, total, free
        self.initial = self._occupied()
        self.calls = 0

    def _occupied(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file() and not p.is_symlink())

    def __call__(self, path: str) -> Usage:
        self.calls += 1
        free = self.base_free + (self.initial - self._occupied())
        return Usage(self.total, self.total - free, free)


def _file(path: Path, size: int, age_s: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    os.utime(path, (NOW - age_s, NOW - age_s))
    return path


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A storage dir: 6 images of 1 MiB (ages 6h..1h, one young), a database with WAL/SHM, others."""
    root = tmp_path / "watch"
    for i, age in enumerate([6, 5, 4, 3, 2, 1]):
        _file(root / "frames" / f"s1/frame_{i}.jpg", MiB, age * 3600)
    _file(root / "frames" / "young.png", MiB, 10)  # younger than min_age_s
    for name in (
        "results.sqlite",
        "results.sqlite-wal",
        "results.sqlite-shm",
        "old.db",
        "run.json",
        "frames.csv",
        "notes.txt",
        "frame_db.jpg.sqlite-journal",
    ):
        _file(root / name, MiB, 48 * 3600)  # oldest of all, yet never deleted
    (root / "frames" / "link.jpg").symlink_to(root / "results.sqlite")
    return root


def test_parse_size_units_percent_and_errors() -> None:
    assert parse_size("1048576") == MiB
    assert parse_size("500M") == 500 * MiB
    assert parse_size("2G") == 2 * 1024**3
    assert parse_size("1.5GiB") == int(1.5 * 1024**3)
    assert parse_size("5%", total=1000) == 50
    assert parse_size(123) == 123
    for bad in ("", "abc", "5%%", "-1G", "2Q"):
        with pytest.raises(ValueError):
            parse_size(bad, total=1000)
    with pytest.raises(ValueError, match="percentage"):
        parse_size("5%")
    with pytest.raises(ValueError, match="<= 100"):
        parse_size("150%", total=1000)


def test_config_env_then_overrides_and_order_check() -> None:
    env = {"GRIMACE_MIN_FREE_START": "10M", "GRIMACE_TARGET_FREE": "1G", "GRIMACE_IMAGE_MIN_AGE_S": "5"}
    cfg = GuardConfig.from_env(env, min_free_images="20M")
    assert (cfg.min_free_start, cfg.min_free_images, cfg.target_free, cfg.min_age_s) == (
        "10M",
        "20M",
        "1G",
        5.0,
    )
    assert cfg.resolve(10 * 1024**3).min_free_images == 20 * MiB
    with pytest.raises(ValueError, match="min_free_start <= min_free_images <= target_free"):
        GuardConfig(min_free_start="2G", min_free_images="1G", target_free="3G").resolve(10**12)
    with pytest.raises(ValueError, match="GRIMACE_IMAGE_MIN_AGE_S"):
        GuardConfig.from_env({"GRIMACE_IMAGE_MIN_AGE_S": "soon"})


def test_database_and_non_images_are_protected(tmp_path: Path) -> None:
    for name in (
        "results.sqlite",
        "results.sqlite-wal",
        "x.sqlite3",
        "a.db",
        "a.db-journal",
        "a.json",
        "a.csv",
        "a.mp4",
        "frame.jpg-wal",
    ):
        assert is_protected(tmp_path / name), name
    for name in ("a.jpg", "a.JPEG", "a.png", "a.webp", "a.tiff", "a.bmp"):
        assert not is_protected(tmp_path / name), name


def test_rotation_deletes_oldest_images_until_target(store: Path) -> None:
    disk = FakeDisk(store, total=100 * MiB, free=int(0.5 * MiB))
    report = rotate(store, target_free=3 * MiB, min_age_s=600, now=NOW, usage_fn=disk)
    # 0.5 MiB free; deleting the three oldest images reaches 3.5 MiB >= 3 MiB
    assert [p.name for p in report.deleted] == ["frame_0.jpg", "frame_1.jpg", "frame_2.jpg"]
    assert report.reached and report.freed_bytes == 3 * MiB
    assert report.free_after == int(3.5 * MiB)
    left = sorted(p.name for p in store.rglob("*"))
    for keep in (
        "results.sqlite",
        "results.sqlite-wal",
        "results.sqlite-shm",
        "old.db",
        "run.json",
        "frames.csv",
        "notes.txt",
        "frame_db.jpg.sqlite-journal",
        "link.jpg",
        "young.png",
        "frame_3.jpg",
        "frame_4.jpg",
        "frame_5.jpg",
    ):
        assert keep in left, keep
    assert (store / "frames" / "link.jpg").is_symlink()


def test_rotation_keeps_young_images_and_reports_unreachable_target(store: Path) -> None:
    disk = FakeDisk(store, total=100 * MiB, free=0)
    report = rotate(store, target_free=50 * MiB, min_age_s=600, now=NOW, usage_fn=disk)
    assert len(report.deleted) == 6 and report.skipped_young == 1
    assert not report.reached and report.free_after == 6 * MiB
    assert (store / "frames" / "young.png").exists()
    assert (store / "results.sqlite").exists() and (store / "results.sqlite-wal").exists()
    assert "kept 1 image(s) younger" in report.summary()


def test_rotation_dry_run_deletes_nothing(store: Path) -> None:
    before = sorted(store.rglob("*"))
    disk = FakeDisk(store, total=100 * MiB, free=0)
    report = rotate(store, target_free=2 * MiB, min_age_s=600, now=NOW, dry_run=True, usage_fn=disk)
    assert [p.name for p in report.deleted] == ["frame_0.jpg", "frame_1.jpg"]
    assert report.free_after == 2 * MiB and report.dry_run
    assert sorted(store.rglob("*")) == before


def test_rotation_is_a_no_op_with_enough_space(store: Path) -> None:
    disk = FakeDisk(store, total=100 * MiB, free=10 * MiB)
    report = rotate(store, target_free=3 * MiB, now=NOW, usage_fn=disk)
    assert report.deleted == [] and report.reached


def test_guard_pauses_images_when_low_and_resumes(tmp_path: Path) -> None:
    root = tmp_path / "watch"
    root.mkdir()
    disk = FakeDisk(root, total=1000 * MiB, free=5 * MiB)
    t = [0.0]
    cfg = GuardConfig(min_free_start="2M", min_free_images="10M", target_free="20M", min_age_s=0)
    guard = DiskGuard(root, cfg, check_interval_s=5.0, usage_fn=disk, clock=lambda: t[0])
    assert guard.images_allowed() is False  # 5 MiB < 10 MiB, nothing to rotate
    assert guard.last_free == 5 * MiB
    disk.base_free = 50 * MiB  # someone freed space
    t[0] = 1.0
    assert guard.images_allowed() is False  # cached within the interval
    t[0] = 6.0
    assert guard.images_allowed() is True
    assert guard.last_free == 50 * MiB


def test_guard_rotates_before_pausing(tmp_path: Path) -> None:
    root = tmp_path / "watch"
    for i in range(20):
        _file(root / f"f{i:02d}.jpg", MiB, 3600 - i)
    disk = FakeDisk(root, total=1000 * MiB, free=5 * MiB)
    cfg = GuardConfig(min_free_start="2M", min_free_images="10M", target_free="12M", min_age_s=0)
    guard = DiskGuard(root, cfg, usage_fn=disk)
    assert guard.images_allowed() is True
    assert guard.last_rotation is not None and len(guard.last_rotation.deleted) == 7
    assert not (root / "f00.jpg").exists() and (root / "f19.jpg").exists()


def test_check_start_rotates_then_refuses_below_floor(tmp_path: Path) -> None:
    root = tmp_path / "watch"
    _file(root / "a.jpg", MiB, 3600)
    _file(root / "results.sqlite", 3 * MiB, 3600)
    cfg = GuardConfig(min_free_start="4M", min_free_images="5M", target_free="6M", min_age_s=0)
    guard = DiskGuard(root, cfg, usage_fn=FakeDisk(root, total=100 * MiB, free=2 * MiB))
    with pytest.raises(DiskSpaceError, match=r"only 3\.00 MiB free"):
        guard.check_start()
    assert not (root / "a.jpg").exists() and (root / "results.sqlite").exists()
    ok = DiskGuard(root, cfg, usage_fn=FakeDisk(root, total=100 * MiB, free=7 * MiB))
    assert ok.check_start().free == 7 * MiB


def test_cli_with_fake_disk(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    disk = FakeDisk(store, total=100 * MiB, free=0)
    common = ["--min-free-start", "2M", "--min-free-images", "3M", "--target-free", "4M", "--min-age-s", "0"]
    assert main(["status", str(store), *common], usage_fn=disk) == 1
    assert main(["rotate", str(store), "--dry-run", *common], usage_fn=disk) == 0
    assert (store / "frames" / "s1" / "frame_0.jpg").exists()
    # the 1 MiB results.sqlite-wal counts as used (it is still to be written into the database):
    # 5 images go, not the 4 that free space alone would ask for
    assert main(["preflight", str(store), *common], usage_fn=disk) == 0  # rotates 5 images, then >= floor
    out = capsys.readouterr().out
    assert "would delete 5 image(s)" in out and "deleted 5 image(s)" in out
    assert "1.00 MiB of database journal" in out
    assert not (store / "frames" / "s1" / "frame_4.jpg").exists()
    assert (store / "results.sqlite").exists()
    assert (
        main(["status", str(store), "--min-free-start", "5M", "--min-free-images", "1M"], usage_fn=disk) == 2
    )


@pytest.mark.parametrize(("floor", "code"), [("1", 0), ("100%", 1)])
def test_cli_preflight_on_the_real_disk(tmp_path: Path, floor: str, code: int) -> None:
    """As systemd runs it: a real statvfs of a directory that does not exist yet."""
    args = [
        "preflight",
        str(tmp_path / "not" / "yet"),
        "--min-free-start",
        floor,
        "--min-free-images",
        floor,
        "--target-free",
        floor,
    ]
    r = subprocess.run(
        [sys.executable, "-m", "edge.diskguard", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert r.returncode == code, r.stdout + r.stderr
    assert ("REFUSING" in r.stderr) == (code == 1)


@pytest.mark.parametrize(("floor", "code"), [("1", 0), ("100%", 1)])
def test_grimace_disk_command_forwards_to_the_same_parser(tmp_path: Path, floor: str, code: int) -> None:
    """``grimace disk preflight`` is the same job as ``python -m edge.diskguard preflight``."""
    from typer.testing import CliRunner

    from edge.cli import app

    args = ["--min-free-start", floor, "--min-free-images", floor, "--target-free", floor]
    r = CliRunner().invoke(app, ["disk", "preflight", str(tmp_path / "new"), *args])
    assert r.exit_code == code, r.output
    assert "diskguard preflight:" in r.output and ("REFUSING" in r.output) == (code == 1)
    r = CliRunner().invoke(app, ["disk", "rotate", "--help"])
    assert r.exit_code == 0 and "usage: grimace disk rotate" in r.output and "--dry-run" in r.output
    r = CliRunner().invoke(app, ["disk", "status"])  # PATH missing: argparse's usage error, status 2
    assert r.exit_code == 2
