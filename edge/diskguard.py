"""Disk-space guard for long unattended runs (``grimace watch`` on a Jetson beside the cages).

A full disk must never cost committed results. The results database (SQLite, WAL) is small; the
selected-frame images are what fills a disk. This module keeps free space above three thresholds,
all measured on the file system that holds the storage directory:

* ``min_free_start`` — the hard floor. Below it the service refuses to start (``preflight`` exits 1),
  so systemd retries later instead of running a scorer that cannot commit rows.
* ``min_free_images`` — below it a running scorer stops saving images (``DiskGuard.images_allowed()``
  returns ``False``) but keeps scoring and committing rows, which need little space.
* ``target_free`` — rotation deletes the oldest selected-frame images until this much is free.

Only files with an image suffix are ever deleted; database files (``*.sqlite``, ``*.db``, their
``-wal``/``-shm``/``-journal`` companions) and everything else are never touched, and images younger
than ``min_age_s`` are kept (they may still be in use). Sizes are given as bytes, with a unit
(``"500M"``, ``"2G"``) or as a share of the file system (``"5%"``).

Command line (stdlib only, so it runs as a systemd ``ExecStartPre`` and from a timer)::

    python -m edge.diskguard status    /var/lib/grimace
    python -m edge.diskguard preflight /var/lib/grimace   # rotate if needed, exit 1 below the floor
    python -m edge.diskguard rotate    /var/lib/grimace [--dry-run]

Defaults come from the environment (``GRIMACE_MIN_FREE_START``, ``GRIMACE_MIN_FREE_IMAGES``,
``GRIMACE_TARGET_FREE``, ``GRIMACE_IMAGE_MIN_AGE_S``), i.e. from ``/etc/grimace/watch.env`` when run
by the systemd units, and are overridden by options.

In-process use by a live loop::

    guard = DiskGuard("/var/lib/grimace/watch", GuardConfig.from_env())
    guard.check_start()                # raises DiskSpaceError below the floor
    ...
    if guard.images_allowed():         # cheap: re-reads free space at most every few seconds
        cv2.imwrite(path, frame)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
"""Suffixes (lower case) of the files rotation may delete. Nothing else is ever deleted."""

_PROTECTED_MARKERS = (".sqlite", ".db", "-wal", "-shm", "-journal")
"""Name fragments that mark a database file; such a file is never deleted, whatever its suffix."""

DEFAULTS = {"min_free_start": "1G", "min_free_images": "2G", "target_free": "4G", "min_age_s": "600"}
ENV_VARS = {
    "min_free_start": "GRIMACE_MIN_FREE_START",
    "min_free_images": "GRIMACE_MIN_FREE_IMAGES",
    "target_free": "GRIMACE_TARGET_FREE",
    "min_age_s": "GRIMACE_IMAGE_MIN_AGE_S",
}

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_PCT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


class DiskSpaceError(RuntimeError):
    """Free space is below the hard floor: the scorer must not start."""


class Usage(NamedTuple):
    """File-system usage in bytes (same fields as :func:`shutil.disk_usage`)."""

    total: int
    used: int
    free: int


UsageFn = Callable[[str], Usage]


def _disk_usage(path: str) -> Usage:
    u = shutil.disk_usage(path)
    return Usage(u.total, u.used, u.free)


def existing_ancestor(path: str | Path) -> Path:
    """The path itself or its nearest existing parent (the storage dir may not exist yet)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def parse_size(text: str | int | float, total: int | None = None) -> int:
    """Parse a size: bytes (``"1048576"``), with a binary unit (``"500M"``, ``"2G"``, ``"1.5GiB"``)
    or a share of the file system (``"5%"``, needs ``total``).

    Raises:
        ValueError: unparseable text, a negative size or a percentage without ``total``.
    """
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"size must be >= 0, got {text}")
        return int(text)
    m = _PCT_RE.match(text)
    if m:
        if total is None:
            raise ValueError(f"size {text!r} is a percentage but the file-system size is unknown")
        pct = float(m.group(1))
        if pct > 100:
            raise ValueError(f"size {text!r}: a percentage must be <= 100")
        return int(total * pct / 100.0)
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"cannot parse size {text!r}: use bytes, a unit (500M, 2G, 1T) or a percentage (5%)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def human(n: float) -> str:
    """Format bytes for people (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class GuardConfig:
    """Thresholds as given (sizes or percentages); resolved against the file system on use.

    Attributes:
        min_free_start: Hard floor; below it the scorer must not start.
        min_free_images: Below it, selected-frame images are not saved (rows still are).
        target_free: Rotation deletes old images until this much is free.
        min_age_s: Images younger than this (seconds, by modification time) are never deleted.
    """

    min_free_start: str = DEFAULTS["min_free_start"]
    min_free_images: str = DEFAULTS["min_free_images"]
    target_free: str = DEFAULTS["target_free"]
    min_age_s: float = float(DEFAULTS["min_age_s"])

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: str | float | None) -> GuardConfig:
        """Defaults, then ``GRIMACE_*`` environment variables, then non-None ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, str | float] = {}
        for key, var in ENV_VARS.items():
            raw = env.get(var, "").strip() or DEFAULTS[key]
            values[key] = raw
        for key, value in overrides.items():
            if key not in ENV_VARS:
                raise TypeError(f"unknown threshold {key!r}")
            if value is not None:
                values[key] = value
        try:
            min_age = float(values["min_age_s"])
        except ValueError as e:
            raise ValueError(f"{ENV_VARS['min_age_s']}: not a number: {values['min_age_s']!r}") from e
        return cls(
            min_free_start=str(values["min_free_start"]),
            min_free_images=str(values["min_free_images"]),
            target_free=str(values["target_free"]),
            min_age_s=min_age,
        )

    def resolve(self, total: int) -> ResolvedThresholds:
        """Thresholds in bytes for a file system of ``total`` bytes; checks their order."""
        r = ResolvedThresholds(
            min_free_start=parse_size(self.min_free_start, total),
            min_free_images=parse_size(self.min_free_images, total),
            target_free=parse_size(self.target_free, total),
        )
        if not r.min_free_start <= r.min_free_images <= r.target_free:
            raise ValueError(
                "thresholds must satisfy min_free_start <= min_free_images <= target_free, got "
                f"{human(r.min_free_start)} / {human(r.min_free_images)} / {human(r.target_free)}"
            )
        return r


class ResolvedThresholds(NamedTuple):
    """Thresholds in bytes."""

    min_free_start: int
    min_free_images: int
    target_free: int


@dataclass
class RotationReport:
    """What a rotation did (or would do with ``dry_run``)."""

    root: Path
    free_before: int
    free_after: int
    target_free: int
    deleted: list[Path] = field(default_factory=list)
    freed_bytes: int = 0
    skipped_young: int = 0
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def reached(self) -> bool:
        """Whether free space is at or above the target afterwards."""
        return self.free_after >= self.target_free

    def summary(self) -> str:
        """One line for the journal."""
        verb = "would delete" if self.dry_run else "deleted"
        s = (
            f"rotation in {self.root}: {verb} {len(self.deleted)} image(s), {human(self.freed_bytes)}; "
            f"free {human(self.free_before)} -> {human(self.free_after)} (target {human(self.target_free)})"
        )
        if self.skipped_young:
            s += f"; kept {self.skipped_young} image(s) younger than the minimum age"
        if self.errors:
            s += f"; {len(self.errors)} error(s)"
        return s


def is_protected(path: Path) -> bool:
    """True for database files and anything that is not an image: rotation never deletes these."""
    name = path.name.lower()
    if any(marker in name for marker in _PROTECTED_MARKERS):
        return True
    return path.suffix.lower() not in IMAGE_SUFFIXES


def _walk_images(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Regular image files under ``root`` (symlinks are neither followed nor deleted)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            p = Path(dirpath, name)
            if is_protected(p):
                continue
            try:
                st = p.lstat()
            except FileNotFoundError:
                continue
            if not p.is_symlink() and p.is_file():
                yield p, st


def rotation_candidates(root: str | Path) -> list[tuple[Path, os.stat_result]]:
    """Image files under ``root``, oldest first (by modification time, then path)."""
    items = list(_walk_images(Path(root)))
    items.sort(key=lambda it: (it[1].st_mtime, str(it[0])))
    return items


def rotate(
    root: str | Path,
    target_free: int,
    *,
    min_age_s: float = 600.0,
    dry_run: bool = False,
    now: float | None = None,
    usage_fn: UsageFn = _disk_usage,
) -> RotationReport:
    """Delete the oldest selected-frame images under ``root`` until ``target_free`` bytes are free.

    Args:
        root: Storage directory (images anywhere below it are candidates).
        target_free: Bytes that should be free afterwards.
        min_age_s: Images modified less than this many seconds ago are kept.
        dry_run: Report what would be deleted, delete nothing.
        now: Current time (``time.time()`` when None), for tests.
        usage_fn: ``path -> Usage``; :func:`shutil.disk_usage` by default.

    Returns:
        The report; ``reached`` tells whether the target was met.
    """
    root = Path(root)
    probe = str(existing_ancestor(root))
    free = usage_fn(probe).free
    report = RotationReport(
        root=root, free_before=free, free_after=free, target_free=target_free, dry_run=dry_run
    )
    if free >= target_free or not root.is_dir():
        return report
    now = time.time() if now is None else now
    simulated_free = free
    for path, st in rotation_candidates(root):
        if simulated_free >= target_free:
            break
        if now - st.st_mtime < min_age_s:
            report.skipped_young += 1
            continue
        if not dry_run:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as e:
                report.errors.append(f"{path}: {e}")
                continue
        report.deleted.append(path)
        report.freed_bytes += st.st_size
        if dry_run:
            simulated_free += st.st_size
        else:
            simulated_free = usage_fn(probe).free
    report.free_after = simulated_free
    return report


class DiskGuard:
    """Free-space checks for a live loop: refuse to start, pause image saving, rotate.

    Args:
        root: Storage directory (created by the caller; may not exist yet).
        config: Thresholds.
        check_interval_s: ``images_allowed`` re-reads free space at most this often.
        rotate_when_low: When free space drops below ``min_free_images``, try a rotation first.
        usage_fn: ``path -> Usage`` (for tests).
        clock: Monotonic clock (for tests).
        databases: SQLite files written on the same disk (``grimace watch``: ``out/grimace.sqlite``).
            Their pending journals (``-wal``, ``-journal``) count as used space: a checkpoint copies
            the WAL's pages into the main file and a rollback journal is replayed into it, so that
            space is spoken for even though the file system still reports it free.
    """

    def __init__(
        self,
        root: str | Path,
        config: GuardConfig | None = None,
        *,
        check_interval_s: float = 5.0,
        rotate_when_low: bool = True,
        usage_fn: UsageFn = _disk_usage,
        clock: Callable[[], float] = time.monotonic,
        databases: Sequence[str | Path] = (),
    ) -> None:
        self.root = Path(root)
        self.databases = [Path(d) for d in databases]
        self.config = config or GuardConfig.from_env()
        self.check_interval_s = check_interval_s
        self.rotate_when_low = rotate_when_low
        self._usage = usage_fn
        self._clock = clock
        self._last_check: float | None = None
        self._allowed = True
        self.last_free: int | None = None
        """Free bytes at the last ``images_allowed`` re-read (``None`` before the first)."""
        self.last_rotation: RotationReport | None = None
        raw_usage = self._usage
        self._usage = lambda path: self._count_journals(raw_usage(path))
        self.thresholds = self.config.resolve(self.usage().total)

    def database_bytes(self) -> tuple[int, int]:
        """``(database files, pending journals)`` in bytes: the main files plus ``-shm``, and the
        ``-wal``/``-journal`` files that will be written into them."""
        main = pending = 0
        for db in self.databases:
            for suffix, is_pending in (("", False), ("-shm", False), ("-wal", True), ("-journal", True)):
                try:
                    size = Path(f"{db}{suffix}").stat().st_size
                except OSError:
                    continue
                if is_pending:
                    pending += size
                else:
                    main += size
        return main, pending

    def _count_journals(self, u: Usage) -> Usage:
        pending = self.database_bytes()[1] if self.databases else 0
        # may go below 0: the journal needs more than is free (the arithmetic of rotation stays right)
        return Usage(u.total, u.used + pending, u.free - pending)

    def usage(self) -> Usage:
        """Current usage of the file system holding ``root``; the databases' pending journals count
        as used (see ``databases``)."""
        return self._usage(str(existing_ancestor(self.root)))

    def check_start(self) -> Usage:
        """Rotate if needed, then raise :class:`DiskSpaceError` if free space is below the floor."""
        u = self.usage()
        if u.free < self.thresholds.target_free:
            self.last_rotation = rotate(
                self.root, self.thresholds.target_free, min_age_s=self.config.min_age_s, usage_fn=self._usage
            )
            u = self.usage()
        if u.free < self.thresholds.min_free_start:
            db_main, db_pending = self.database_bytes()
            dbs = (
                f" (counting as used the {human(db_pending)} of database journal still to be written "
                f"into the {human(db_main)} database)"
                if db_main or db_pending
                else ""
            )
            raise DiskSpaceError(
                f"only {human(u.free)} free on the file system of {self.root}{dbs} "
                f"(need at least {human(self.thresholds.min_free_start)}); free some space or move "
                "the storage directory to a larger disk"
            )
        return u

    def images_allowed(self) -> bool:
        """Whether a selected-frame image may be written now (rows are always written).

        Cheap: free space is re-read at most every ``check_interval_s`` seconds. Below
        ``min_free_images`` it first tries a rotation (when ``rotate_when_low``).
        """
        t = self._clock()
        if self._last_check is not None and t - self._last_check < self.check_interval_s:
            return self._allowed
        self._last_check = t
        free = self.usage().free
        if free < self.thresholds.min_free_images and self.rotate_when_low:
            self.last_rotation = rotate(
                self.root, self.thresholds.target_free, min_age_s=self.config.min_age_s, usage_fn=self._usage
            )
            free = self.usage().free
        self.last_free = free
        self._allowed = free >= self.thresholds.min_free_images
        return self._allowed


# ----------------------------------------------------------------------------------------------- CLI


def _build_parser(prog: str = "python -m edge.diskguard") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Keep free space for the results database: rotate old selected-frame images, "
        "refuse to start below a floor. Never deletes database files.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("status", "print free space and thresholds; exit 1 below the start floor"),
        ("preflight", "rotate if below target, then exit 1 if still below the start floor"),
        ("rotate", "delete the oldest images until the target is free"),
    ):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("path", help="storage directory (images below it may be rotated)")
        sp.add_argument("--min-free-start", help=f"hard floor (env {ENV_VARS['min_free_start']})")
        sp.add_argument("--min-free-images", help=f"pause images below (env {ENV_VARS['min_free_images']})")
        sp.add_argument("--target-free", help=f"rotation target (env {ENV_VARS['target_free']})")
        sp.add_argument("--min-age-s", type=float, help=f"keep newer images (env {ENV_VARS['min_age_s']})")
        if name == "rotate":
            sp.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    return p


def _minus(usage_fn: UsageFn, pending: int) -> UsageFn:
    """``usage_fn`` with ``pending`` bytes (database journals still to be written) counted as used."""

    def usage(path: str) -> Usage:
        u = usage_fn(path)
        return Usage(u.total, u.used + pending, u.free - pending)

    return usage


def main(
    argv: Sequence[str] | None = None, usage_fn: UsageFn = _disk_usage, prog: str = "python -m edge.diskguard"
) -> int:
    """Command-line entry point (also ``grimace disk``); returns the exit status (0 ok, 1 below the
    floor, 2 bad usage)."""
    try:
        args = _build_parser(prog).parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2): argparse has printed why
        return int(e.code or 0)
    tag = f"diskguard {args.command}:"
    try:
        cfg = GuardConfig.from_env(
            min_free_start=args.min_free_start,
            min_free_images=args.min_free_images,
            target_free=args.target_free,
            min_age_s=args.min_age_s,
        )
        probe = existing_ancestor(args.path)
        root = Path(args.path)
        # the session databases kept in the storage folder: their -wal/-journal count as used
        dbs = sorted(p for pat in ("*.sqlite", "*.db") for p in root.glob(pat)) if root.is_dir() else []
        pending = DiskGuard(root, cfg, usage_fn=usage_fn, databases=dbs).database_bytes()[1] if dbs else 0
        usage_fn = _minus(usage_fn, pending)
        u = usage_fn(str(probe))
        th = cfg.resolve(u.total)
    except (ValueError, OSError) as e:
        print(f"{tag} error: {e}", file=sys.stderr)
        return 2
    journal = f" (after {human(pending)} of database journal still to be written)" if pending else ""
    print(
        f"{tag} {root} on {probe}: {human(u.free)} free{journal} of {human(u.total)}; floor "
        f"{human(th.min_free_start)}, images paused below {human(th.min_free_images)}, "
        f"rotation target {human(th.target_free)}"
    )
    if args.command == "rotate" or (args.command == "preflight" and u.free < th.target_free):
        report = rotate(
            root,
            th.target_free,
            min_age_s=cfg.min_age_s,
            dry_run=getattr(args, "dry_run", False),
            usage_fn=usage_fn,
        )
        print(f"{tag} {report.summary()}")
        for err in report.errors:
            print(f"{tag} could not delete {err}", file=sys.stderr)
        if report.dry_run:
            for path in report.deleted:
                print(f"  {path}")
        u = usage_fn(str(probe))
    if args.command in ("status", "preflight") and u.free < th.min_free_start:
        print(
            f"{tag} REFUSING: {human(u.free)} free is below the floor {human(th.min_free_start)}; "
            "free space (images are already rotated) or move the storage to a larger disk",
            file=sys.stderr,
        )
        return 1
    if args.command == "status" and u.free < th.min_free_images:
        print(f"{tag} image saving would be paused ({human(u.free)} < {human(th.min_free_images)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
