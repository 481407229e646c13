"""Inference latency, measured honestly: warm-up, synchronised timing, interleaved comparisons.

`measure_latency` times one model; `compare_latency` times several in round-robin order (A, B, C,
A, B, C, ...) so that machine noise (other jobs, clock changes) hits all of them alike, which
matters on shared machines.  On CUDA every timed call is bracketed by `torch.cuda.synchronize()`;
`dtype=torch.bfloat16` runs the model and input in bf16, `channels_last` converts 4-D models and
inputs to that memory format (what tensor-core convolutions want).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

__all__ = ["LatencyStats", "measure_latency", "compare_latency", "prepare_for_timing"]


@dataclass
class LatencyStats:
    """Per-call wall time in milliseconds over `repeats` timed calls."""

    median_ms: float
    mean_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    batch_size: int
    device: str
    dtype: str

    @property
    def throughput(self) -> float:
        """Images (samples) per second at the median."""
        return self.batch_size / (self.median_ms / 1000.0)

    def to_dict(self) -> dict:
        return {**asdict(self), "throughput": self.throughput}


def prepare_for_timing(model: nn.Module, example: Tensor, device: torch.device | str = "cpu",
                       dtype: torch.dtype | None = None, channels_last: bool = True) -> tuple[nn.Module, Tensor]:
    """An eval-mode copy of the model and the input on `device`, in `dtype` and memory format."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("latency on 'cuda' asked for, but no CUDA device is available")
    m = copy.deepcopy(model).eval().to(device)
    x = example.to(device)
    if dtype is not None:
        m, x = m.to(dtype), x.to(dtype)
    if channels_last and x.dim() == 4:
        m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    return m, x


def timed_call(model: nn.Module, x: Tensor, cuda: bool) -> float:
    """Wall time of one forward pass in ms (synchronised on CUDA)."""
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    model(x)
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000.0


def _stats(samples: list[float], batch: int, device: torch.device, dtype: torch.dtype) -> LatencyStats:
    s = sorted(samples)
    q = statistics.quantiles(s, n=10) if len(s) >= 2 else [s[0]] * 9
    return LatencyStats(statistics.median(s), statistics.fmean(s), q[0], q[-1], len(s), batch, str(device),
                        str(dtype).replace("torch.", ""))


@torch.inference_mode()
def compare_latency(models: Mapping[str, nn.Module], example: Tensor, *, device: torch.device | str = "cpu",
                    dtype: torch.dtype | None = None, channels_last: bool = True, warmup: int = 3,
                    repeats: int = 10) -> dict[str, LatencyStats]:
    """Latency of each model on the same input, timed in interleaved rounds."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be ≥ 1 and warmup ≥ 0, got {repeats}, {warmup}")
    device = torch.device(device)
    prepared = {k: prepare_for_timing(m, example, device, dtype, channels_last) for k, m in models.items()}
    cuda = device.type == "cuda"
    for m, x in prepared.values():
        for _ in range(warmup):
            timed_call(m, x, cuda)
    samples: dict[str, list[float]] = {k: [] for k in prepared}
    for _ in range(repeats):
        for k, (m, x) in prepared.items():
            samples[k].append(timed_call(m, x, cuda))
    dt = dtype or example.dtype
    return {k: _stats(v, example.shape[0], device, dt) for k, v in samples.items()}


def measure_latency(model: nn.Module, example: Tensor, *, device: torch.device | str = "cpu",
                    dtype: torch.dtype | None = None, channels_last: bool = True, warmup: int = 3,
                    repeats: int = 10) -> LatencyStats:
    """Median (and spread) of the forward time of `model` on `example` (batch = example.shape[0])."""
    return compare_latency({"model": model}, example, device=device, dtype=dtype, channels_last=channels_last,
                           warmup=warmup, repeats=repeats)["model"]
