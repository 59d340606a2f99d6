"""Beyond one machine: archives scored on a Ray cluster, stations synced into a central PostgreSQL.

* :mod:`edge.scale.ray_score`: ``grimace score --engine ray`` (Ray Data over the input list, a pool of
  ONNX Runtime model actors, the same writers as local scoring, per-input parts for resuming).
* :mod:`edge.scale.sync`: ``grimace sync --to postgresql://...`` (SQLAlchemy Core; idempotent,
  resumable, a session is complete centrally only once all its rows are there).

Both import their engine (``ray``, ``sqlalchemy``) only when called: install the ``ray`` or ``central``
extra where they are used.
"""
