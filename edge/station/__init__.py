"""The lab station: studies, several chambers at once and the browser UI (``grimace station``).

* :mod:`edge.station.study` — the study model in the store (studies, animals, timepoints, chambers,
  study sessions); no web dependencies, used by ``grimace watch --study`` too.
* :mod:`edge.station.chambers` — several cameras with one loaded model: a batching scorer shared by
  per-chamber capture threads, each running :func:`edge.live.record_session`.
* :mod:`edge.station.agreement` — the agreement statistics of the validation page (numpy).
* :mod:`edge.station.auth` — password hashing, logins, CSRF tokens.
* :mod:`edge.station.views` — the figures and SVG plots behind the session, study, grading and
  validation pages, and the study export (no web framework).
* :mod:`edge.station.app` — the FastAPI app (extra ``station``: fastapi, uvicorn, jinja2,
  python-multipart), imported only by ``grimace station`` (:mod:`edge.station.cli`).
* :mod:`edge.station.demo` — ``make station-demo``.

Reference: ``docs/station.md``.
"""
