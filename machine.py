"""What a measurement ran on, and what the device can do: the environment record every run log
and benchmark starts with (code version, library versions, device), and the device's measured
matmul peak (the denominator of MFU). Shared by train.py and bench.py; imports only torch."""

import functools
import os
import platform
import subprocess
import time

import torch


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@functools.cache
def matmul_peak(device, dtype, n=None, repeats=10):
    """FLOP/s of the fastest of several large square matmuls: the device's practical peak
    (measured once per process: ~0.2 s on this 2-core CPU, where n = 1,536 reads the same peak as 2,048
    in a fifth of the time: 196 vs 190 GFLOP/s)."""
    n = n or (8192 if device.type == "cuda" else 1536)
    a = b = torch.full((n, n), 0.5, device=device, dtype=dtype)  # no random draws: callers' RNG state is kept
    return 2 * n**3 / fastest([lambda: a @ b], device, repeats)


@functools.cache
def memory_bandwidth(device, mib=256, repeats=5):
    """Bytes/s at which the device reads a float32 tensor larger than any cache: the fastest of a
    matrix-vector product (decoding's pattern) and a sum over it, repeated (measured once per process:
    ~1 s on a CPU; the sum reads faster than MKL's single-vector product on some CPUs)."""
    n = 4096
    w = torch.full((mib * 2**20 // (4 * n), n), 0.5, device=device)
    x = torch.full((n,), 0.5, device=device)
    return w.numel() * w.element_size() / fastest([lambda: w @ x, w.sum], device, repeats)


def fastest(calls, device, repeats):
    """The shortest time, in seconds, of any of the calls, each run `repeats` times (interleaved)."""
    times = []
    for _ in range(repeats):
        for call in calls:
            sync(device)
            t0 = time.perf_counter()
            call()
            sync(device)
            times.append(time.perf_counter() - t0)
    return min(times)


def cpu_name():
    """The CPU's model name (/proc/cpuinfo on Linux; else what platform knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def environment(device):
    """What a measurement ran on: code version, library versions, device (train.py's run logs too)."""
    try:
        git = ["git", "describe", "--always", "--dirty"]
        commit = subprocess.run(git, capture_output=True, text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    env = {"commit": commit, "python": platform.python_version(), "torch": torch.__version__}
    for module in ("transformers", "tokenizers", "numpy"):
        try:
            env[module] = __import__(module).__version__
        except ImportError:
            env[module] = None
    return env | {"device": f"{device.type}: {name}", "cores": os.cpu_count(), "threads": torch.get_num_threads()}
