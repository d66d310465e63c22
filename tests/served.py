"""The service's test server (API and dashboard tests): ``autoprune serve`` through
:class:`autoprune.service.local.LocalServer` with three tokens (one an admin's), and the tiny config the tests
submit."""

from __future__ import annotations

from pathlib import Path

from autoprune.service.local import LocalServer

ROOT = Path(__file__).parent.parent
TOKEN = "test-token-0123456789abcdef"
BOB = "bobs-token-0123456789abcdef"  # a second, named token: its runs' owner is bob
CAROL = "carols-token-0123456789abcdef"  # an admin's: carol sees and changes every run
# the fast configs of test_cli.py: small CNN on digits, a 1-epoch baseline, no finetune
TINY = {"model": "small_cnn", "dataset": "digits", "budget": {"params": 0.6}, "searcher": "random", "trials": 2,
        "evaluator": {"bn_batches": 1, "finetune_steps": 0, "val_batches": 1}, "final_finetune_steps": 0,
        "train": {"epochs": 1}, "rescore": 0}


def serve(runs_root: Path, *args: str) -> LocalServer:
    """``autoprune serve`` in a subprocess on a free port, with the test tokens (one thread per process)."""
    return LocalServer(runs_root, *args, token=f"{TOKEN},bob={BOB},carol:admin={CAROL}", env={"OMP_NUM_THREADS": "1"})
