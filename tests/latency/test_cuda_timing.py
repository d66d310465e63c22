"""The CUDA timing path on a CPU machine: a fake GPU clock (CUDA events) and synchronisation, checked in order."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from search_spaces import measure
from search_spaces.ground.errors import ConfigError


class _FakeGpu:
    """Records what the timing code asks of CUDA; each event pair spans ``ms_per_block`` on the GPU clock."""

    def __init__(self, ms_per_block: float) -> None:
        self.calls: list[str] = []
        self.ms_per_block = ms_per_block
        gpu = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                assert enable_timing, "events must be created with timing enabled"

            def record(self) -> None:
                gpu.calls.append("record")

            def synchronize(self) -> None:
                gpu.calls.append("event-sync")

            def elapsed_time(self, _end: object) -> float:
                return gpu.ms_per_block

        self.Event = Event

    def synchronize(self) -> None:
        self.calls.append("sync")


def test_cuda_latency_is_timed_with_events_after_warm_up_and_synchronisation(monkeypatch) -> None:
    gpu = _FakeGpu(ms_per_block=25.0)
    monkeypatch.setattr(torch.cuda, "Event", gpu.Event)
    monkeypatch.setattr(torch.cuda, "synchronize", gpu.synchronize)
    monkeypatch.setattr(torch.cuda, "device", lambda device: gpu.calls.append(device) or contextlib.nullcontext())

    def run() -> None:
        gpu.calls.append("run")

    ms = measure.time_runner_ms(run, device="cuda:1", min_run_time=0.1)
    assert gpu.calls.pop(0) == "cuda:1"  # events and synchronize on the model's device, not the current one
    assert ms == pytest.approx(2.5)  # a block of 10 runs between two events: 25 ms of GPU time
    assert gpu.calls[:measure.CUDA_WARMUP] == ["run"] * measure.CUDA_WARMUP  # untimed warm-up first
    assert gpu.calls[measure.CUDA_WARMUP] == "sync"  # the queue drained before the first event
    first_block = gpu.calls[measure.CUDA_WARMUP + 1:measure.CUDA_WARMUP + 14]
    assert first_block == ["record", *["run"] * 10, "record", "event-sync"]  # read only once the end event is done
    blocks = gpu.calls.count("event-sync")
    assert blocks >= 5 and blocks * 25.0 >= 0.1 * 1e3  # min_run_time counts GPU time: 10 runs a block


def test_a_cuda_device_is_refused_where_there_is_none(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="'cuda' was asked for but CUDA is not available"):
        measure.measure_latency_ms(torch.nn.Linear(2, 2), torch.zeros(1, 2), device="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the benchmark measures on a machine with a GPU")
def test_the_gpu_benchmark_says_in_one_line_that_there_is_no_gpu_and_exits_0() -> None:
    script = Path(__file__).parents[2] / "bench" / "gpu_latency.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == ["gpu_latency: no CUDA GPU on this machine; nothing measured"]
