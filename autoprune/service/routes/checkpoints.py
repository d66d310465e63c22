"""``/checkpoints``: upload trained weights (a state dict) that a config then names by their content id."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from autoprune.builtins.models import MODELS
from autoprune.builtins.registry import registered
from autoprune.service.checkpoints import check_state_dict, save_checkpoint
from autoprune.service.routes.deps import Settings, Store, Uploads, limited_body
from search_spaces.ground.errors import unknown_name

router = APIRouter()


@router.post("/checkpoints", status_code=201)
async def upload(request: Request, model: str, store: Store, settings: Settings, uploads: Uploads) -> dict[str, str]:
    """Upload trained weights of a model the server knows (a state dict saved with ``torch.save``; body
    ``application/octet-stream``). Stored by content; a config names it with ``checkpoint: <id>``.

    An upload holds its body and then its tensors (at most as large): both count against the server's memory
    for uploads in flight (503 past it); the archive is checked before anything in it is unpickled."""
    if model not in MODELS and model not in registered("autoprune.models"):
        raise unknown_name("model", model, [*MODELS, *registered("autoprune.models")])
    with uploads.reservation() as take:
        body = await limited_body(request, settings.max_upload_bytes, take=take)
        take(len(body))  # the tensors loaded from it
        await run_in_threadpool(check_state_dict, body, model)  # loading and hashing: not on the event loop
        digest = await run_in_threadpool(save_checkpoint, store.checkpoints, body, model)
    return {"id": digest, "model": model}
