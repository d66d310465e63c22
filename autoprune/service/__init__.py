"""autoprune as a service: ``autoprune serve`` (HTTP API, queue, auth, restart safety) and its Python client.

Layers inside the package, lowest first: ``auth`` and ``remote`` (the token; a config from a request) →
``store`` (runs as directories under the runs root) → ``supervisor`` (one driver process per run) →
``routes`` (one FastAPI router per concern, over ``routes.deps``; ``errors``) → ``app`` (composes them) → ``server``
(uvicorn); ``local`` starts one in a subprocess. ``client`` talks to a server over HTTP only; ``driver`` is the entry
point of a run's process.
"""
