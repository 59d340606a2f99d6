"""The study model in the station's store (schema version 3, :data:`edge.storage.MIGRATIONS`).

A **study** has animals (id, group, sex, strain, notes) and timepoints (e.g. ``baseline``, ``day1``,
in order) and the protocol settings its sessions use (scale, interval, session length, frames/s).
**Chambers** belong to the station (a camera each). A **study session** is one store session (the
``sessions`` row that :func:`edge.live.record_session` writes) of one animal at one timepoint in one
chamber, with the protocol settings it was started with.

Ids that become parts of paths or session ids (study, animal, timepoint, chamber) must match
:data:`ID_PATTERN`; names and notes are free text (always escaped when shown).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from edge.storage import SessionState, Store

if TYPE_CHECKING:
    from edge.live import Subject

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""Ids: letters, digits, ``_ . -``, starting with a letter or digit, at most 64 characters (so an id
never climbs out of a folder: no ``/``, no leading ``.``)."""


class StudyError(ValueError):
    """Bad study input (the message says which field and what is wrong)."""


def check_id(value: str, what: str) -> str:
    """Return ``value`` stripped when it is a valid id.

    Raises:
        StudyError: Naming ``what`` and the rule.
    """
    v = (value or "").strip()
    if not ID_PATTERN.match(v) or ".." in v:
        raise StudyError(
            f"{what} {value!r} is not a valid id: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return v


@dataclass
class Protocol:
    """Protocol settings of a study's sessions.

    Attributes:
        scale: Scale name the model must be made for.
        interval_s: Protocol interval (one selected frame each).
        duration_s: Session length.
        fps: Frames per second scored.
    """

    scale: str = "rgs"
    interval_s: float = 90.0
    duration_s: float = 900.0
    fps: float = 2.0

    def check(self) -> Protocol:
        """Validate (positive times, interval not longer than the session).

        Raises:
            StudyError: What is wrong.
        """
        if not (self.interval_s > 0 and self.duration_s > 0 and self.fps > 0):
            raise StudyError(
                f"interval ({self.interval_s}), session ({self.duration_s}) and fps ({self.fps}) must be > 0"
            )
        if self.interval_s > self.duration_s:
            raise StudyError(
                f"interval ({self.interval_s} s) is longer than the session ({self.duration_s} s)"
            )
        return self


def _rows(store: Store, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
    cur = store.db.execute(sql, args)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


class Study:
    """Study tables of one store.

    Args:
        store: An open :class:`~edge.storage.Store` (schema version 3 or later).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db

    # --------------------------------------------------------------------------------- studies
    def add_study(self, study_id: str, protocol: Protocol, title: str = "", notes: str = "") -> str:
        """Create a study.

        Raises:
            StudyError: Bad id, bad protocol, or the id exists.
        """
        sid = check_id(study_id, "study")
        protocol.check()
        if self.study(sid):
            raise StudyError(f"study {sid!r} exists already")
        self.db.execute(
            "INSERT INTO studies (id, title, scale, interval_s, duration_s, fps, notes, created_at) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (
                sid,
                title,
                protocol.scale,
                protocol.interval_s,
                protocol.duration_s,
                protocol.fps,
                notes,
                time.time(),
            ),
        )
        return sid

    def study(self, study_id: str) -> dict[str, Any]:
        """The study's row (``{}`` when none)."""
        r = _rows(self.store, "SELECT * FROM studies WHERE id=?", (study_id,))
        return r[0] if r else {}

    def studies(self) -> list[dict[str, Any]]:
        """All studies, newest first."""
        return _rows(self.store, "SELECT * FROM studies ORDER BY created_at DESC")

    def protocol(self, study_id: str) -> Protocol:
        """The study's protocol settings.

        Raises:
            StudyError: No such study.
        """
        s = self._need_study(study_id)
        return Protocol(s["scale"], s["interval_s"], s["duration_s"], s["fps"])

    def _need_study(self, study_id: str) -> dict[str, Any]:
        s = self.study(study_id)
        if not s:
            raise StudyError(f"no study {study_id!r} in {self.store.location}")
        return s

    # --------------------------------------------------------------------------------- animals
    def add_animal(
        self, study_id: str, animal_id: str, group: str = "", sex: str = "", strain: str = "", notes: str = ""
    ) -> str:
        """Add an animal to a study.

        Raises:
            StudyError: No such study, bad id, duplicate, or a sex other than ``f``/``m``/empty.
        """
        self._need_study(study_id)
        aid = check_id(animal_id, "animal")
        sex = (sex or "").strip().lower()
        if sex not in ("", "f", "m"):
            raise StudyError(f"animal {aid}: sex must be 'f', 'm' or empty, got {sex!r}")
        if self.animal(study_id, aid):
            raise StudyError(f"animal {aid!r} exists already in study {study_id!r}")
        self.db.execute(
            "INSERT INTO animals (study_id, id, grp, sex, strain, notes) VALUES (?,?,?,?,?,?)",
            (study_id, aid, group.strip(), sex, strain.strip(), notes),
        )
        return aid

    def animal(self, study_id: str, animal_id: str) -> dict[str, Any]:
        """The animal's row (``{}`` when none)."""
        r = _rows(self.store, "SELECT * FROM animals WHERE study_id=? AND id=?", (study_id, animal_id))
        return r[0] if r else {}

    def animals(self, study_id: str) -> list[dict[str, Any]]:
        """A study's animals by group then id."""
        return _rows(self.store, "SELECT * FROM animals WHERE study_id=? ORDER BY grp, id", (study_id,))

    # ------------------------------------------------------------------------------ timepoints
    def add_timepoint(self, study_id: str, timepoint_id: str) -> str:
        """Append a timepoint to a study (order = order added).

        Raises:
            StudyError: No such study, bad id or duplicate.
        """
        self._need_study(study_id)
        tid = check_id(timepoint_id, "timepoint")
        if tid in self.timepoints(study_id):
            raise StudyError(f"timepoint {tid!r} exists already in study {study_id!r}")
        pos = self.db.execute(
            "SELECT COALESCE(MAX(position), -1) + 1 FROM timepoints WHERE study_id=?", (study_id,)
        ).fetchone()[0]
        self.db.execute(
            "INSERT INTO timepoints (study_id, id, position) VALUES (?,?,?)", (study_id, tid, pos)
        )
        return tid

    def timepoints(self, study_id: str) -> list[str]:
        """A study's timepoints in order."""
        return [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM timepoints WHERE study_id=? ORDER BY position", (study_id,)
            )
        ]

    # -------------------------------------------------------------------------------- chambers
    def add_chamber(self, chamber_id: str, camera: str, notes: str = "") -> str:
        """Add (or re-point) a chamber of the station.

        Raises:
            StudyError: Bad id or empty camera.
        """
        cid = check_id(chamber_id, "chamber")
        if not str(camera).strip():
            raise StudyError(f"chamber {cid}: the camera is empty")
        self.db.execute(
            "INSERT INTO chambers (id, camera, notes) VALUES (?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET camera=excluded.camera",
            (cid, str(camera).strip(), notes),
        )
        return cid

    def chambers(self) -> list[dict[str, Any]]:
        """The station's chambers by id."""
        return _rows(self.store, "SELECT * FROM chambers ORDER BY id")

    def chamber(self, chamber_id: str) -> dict[str, Any]:
        """The chamber's row (``{}`` when none)."""
        r = _rows(self.store, "SELECT * FROM chambers WHERE id=?", (chamber_id,))
        return r[0] if r else {}

    # -------------------------------------------------------------------------------- sessions
    def session_id_for(self, study_id: str, animal_id: str, timepoint_id: str) -> str:
        """The session id of an animal at a timepoint: ``<study>-<animal>-<timepoint>`` (ids are
        checked, so the result is a safe folder name)."""
        return f"{study_id}-{animal_id}-{timepoint_id}"

    def check_session(self, study_id: str, animal_id: str, timepoint_id: str) -> Protocol:
        """Check that the study, animal and timepoint exist; return the study's protocol.

        Raises:
            StudyError: Which one is missing (or invalid).
        """
        check_id(study_id, "study")
        check_id(animal_id, "animal")
        check_id(timepoint_id, "timepoint")
        protocol = self.protocol(study_id)
        if not self.animal(study_id, animal_id):
            raise StudyError(f"study {study_id!r} has no animal {animal_id!r}")
        if timepoint_id not in self.timepoints(study_id):
            raise StudyError(
                f"study {study_id!r} has no timepoint {timepoint_id!r} "
                f"(timepoints: {', '.join(self.timepoints(study_id)) or 'none'})"
            )
        return protocol

    def link_session(
        self,
        session_id: str,
        study_id: str,
        animal_id: str,
        timepoint_id: str,
        chamber_id: str,
        protocol: Protocol,
    ) -> None:
        """Attach a store session (already opened) to an animal, timepoint and chamber.

        A session linked before keeps its link (resuming); a link to another animal or timepoint
        is refused.

        Raises:
            StudyError: The session belongs to another animal/timepoint.
        """
        row = self.study_session(session_id)
        if row:
            if (row["study_id"], row["animal_id"], row["timepoint_id"]) != (
                study_id,
                animal_id,
                timepoint_id,
            ):
                raise StudyError(
                    f"session {session_id!r} belongs to {row['study_id']}/{row['animal_id']}/"
                    f"{row['timepoint_id']}, not {study_id}/{animal_id}/{timepoint_id}"
                )
            self.db.execute(
                "UPDATE study_sessions SET chamber_id=?, wanted='run' WHERE session_id=?",
                (chamber_id, session_id),
            )
            return
        self.db.execute(
            "INSERT INTO study_sessions (session_id, study_id, animal_id, timepoint_id, chamber_id, "
            "settings) "
            "VALUES (?,?,?,?,?,?)",
            (session_id, study_id, animal_id, timepoint_id, chamber_id, json.dumps(asdict(protocol))),
        )

    def set_wanted(self, session_id: str, wanted: str) -> None:
        """Record whether the operator wants the session running (``run``) or stopped (``stop``), so
        a restarted station resumes exactly the sessions that were running."""
        self.db.execute("UPDATE study_sessions SET wanted=? WHERE session_id=?", (wanted, session_id))

    def study_session(self, session_id: str) -> dict[str, Any]:
        """The study session row joined with its store session (``{}`` when none)."""
        r = _rows(
            self.store,
            "SELECT ss.*, s.status, s.started_at, s.updated_at, s.source, s.model, s.interval_s, "
            "s.duration_s FROM study_sessions ss JOIN sessions s ON s.id = ss.session_id "
            "WHERE ss.session_id=?",
            (session_id,),
        )
        return r[0] if r else {}

    def sessions(self, study_id: str) -> list[dict[str, Any]]:
        """A study's sessions with animal group and store status."""
        return _rows(
            self.store,
            "SELECT ss.*, a.grp, s.status, s.started_at, s.updated_at FROM study_sessions ss "
            "JOIN sessions s ON s.id = ss.session_id "
            "JOIN animals a ON a.study_id = ss.study_id AND a.id = ss.animal_id "
            "WHERE ss.study_id=? ORDER BY s.started_at",
            (study_id,),
        )

    def resumable(self) -> list[dict[str, Any]]:
        """Study sessions that were running when the station stopped (not complete, not stopped by
        the operator), oldest first."""
        return _rows(
            self.store,
            "SELECT ss.* FROM study_sessions ss JOIN sessions s ON s.id = ss.session_id "
            "WHERE s.status='running' AND ss.wanted='run' ORDER BY s.started_at",
        )

    def missing(self, study_id: str) -> list[tuple[str, str]]:
        """``(animal, timepoint)`` pairs with no complete session."""
        done = {
            (r["animal_id"], r["timepoint_id"]) for r in self.sessions(study_id) if r["status"] == "complete"
        }
        return [
            (a["id"], t)
            for t in self.timepoints(study_id)
            for a in self.animals(study_id)
            if (a["id"], t) not in done
        ]


def study_subject(
    store: Store,
    study_id: str,
    animal_id: str,
    timepoint_id: str,
    chamber_id: str,
    protocol: Protocol,
    create: bool = True,
) -> tuple[Subject, str]:
    """The :class:`~edge.live.Subject` of a study session and its default session id.

    With ``create`` (``grimace watch --study``), a study that is not in the store is created with
    ``protocol`` and the animal and timepoint are added to it; in an existing study they must exist
    (a typo is refused, not recorded as a new animal).

    Raises:
        StudyError: Bad ids, or an animal/timepoint missing from an existing study.
    """
    from edge.live import Subject

    st = Study(store)
    sid, aid, tid = (
        check_id(study_id, "study"),
        check_id(animal_id, "animal"),
        check_id(timepoint_id, "timepoint"),
    )
    cid = check_id(chamber_id, "chamber")
    if create and not st.study(sid):
        st.add_study(sid, protocol)
        st.add_animal(sid, aid)
        st.add_timepoint(sid, tid)
    st.check_session(sid, aid, tid)
    animal = st.animal(sid, aid)
    session_id = st.session_id_for(sid, aid, tid)

    def on_open(store_: Store, _state: SessionState) -> None:
        Study(store_).link_session(_state.session_id, sid, aid, tid, cid, protocol)

    return Subject(aid, animal.get("grp", ""), tid, on_open), session_id
