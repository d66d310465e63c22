"""The API's routes, one :class:`fastapi.APIRouter` per concern, composed by :func:`autoprune.service.app.create_app`.

``health`` (liveness), ``runs`` (submit, list, show, follow, cancel, resume, delete), ``files`` (a run's trials,
policy and files), ``dashboard`` (the page and its data calls) and ``checkpoints`` (uploads); ``deps`` is what they
depend on (the settings, store and supervisor on ``app.state``, the token's owner, a size-limited body).
"""

from __future__ import annotations
