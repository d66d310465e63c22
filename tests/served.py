"""``autoprune serve`` in a subprocess for the service's tests (API and dashboard), and the tiny config they submit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).parent.parent
TOKEN = "test-token-0123456789abcdef"
# the fast configs of test_cli.py: small CNN on digits, a 1-epoch baseline, no finetune
TINY = {"model": "small_cnn", "dataset": "digits", "budget": {"params": 0.6}, "searcher": "random", "trials": 2,
        "evaluator": {"bn_batches": 1, "finetune_steps": 0, "val_batches": 1}, "final_finetune_steps": 0,
        "train": {"epochs": 1}, "rescore": 0}


class Server:
    """``autoprune serve`` in a subprocess on a free port."""

    def __init__(self, runs_root: Path, *args: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "AUTOPRUNE_TOKEN": TOKEN, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.log = open(runs_root.parent / f"server-{self.port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autoprune.cli", "serve", "--port", str(self.port), "--runs-root", str(runs_root),
             *args], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300  # importing torch takes minutes on a busy 2-core machine
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.process.poll() is None, Path(self.log.name).read_text()
            if time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise AssertionError("the server did not come up")
            time.sleep(0.3)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(60)
        self.log.close()
