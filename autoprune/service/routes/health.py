"""``/health``: liveness, with no token needed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from autoprune.service.routes.deps import Store

router = APIRouter()


@router.get("/health")
def health(store: Store) -> dict[str, Any]:
    """Liveness (no token needed)."""
    jobs = store.all()
    return {"status": "ok", "runs": len(jobs), "running": sum(j["status"] == "running" for j in jobs)}
