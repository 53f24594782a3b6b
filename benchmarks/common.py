"""Helpers shared by the benchmark scripts: machine and version info, the machine's load, the
matrix-multiply peak measured in the calling process, timing, and atomic JSON writes.

Scripts import it as `from common import ...` (they put their own folder on sys.path), so each
benchmark runs as a plain file: `.venv/bin/python benchmarks/<name>.py`.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

from cllm4rec.files import versions as package_versions, write_atomic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PACKAGES = ("cllm4rec", "numpy", "scipy", "torch", "tokenizers", "transformers", "lightning")


def versions() -> dict:
    return package_versions(PACKAGES)


def cpu_flags() -> list[str]:
    """The CPU features that decide matmul speed (bf16 / AMX / AVX-512), from /proc/cpuinfo."""
    want = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "avx512_vnni")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in want if f in have]
    except OSError:
        pass
    return []


def machine() -> dict:
    """CPU model, cores, platform, torch threads, package versions (keys of the older
    benchmarks kept: cpu, cores, affinity_cores, platform, versions)."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {"cpu": cpu, "cores": os.cpu_count(),
           "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
           "cpu_flags": cpu_flags(), "platform": platform.platform(), "versions": versions()}
    try:
        import torch
        out["torch_threads"] = torch.get_num_threads()
        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:   # torch missing or too old: the rest still describes the machine
        pass
    return out


def machine_line(m: dict) -> str:
    """One line for a README: 'AMD EPYC, 2 cores (avx512_bf16), torch 2.13.0+cpu, ...'."""
    v = m.get("versions", {})
    flags = ", ".join(m.get("cpu_flags", []))
    soft = ", ".join(f"{k} {v[k]}" for k in ("torch", "transformers", "numpy") if v.get(k))
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores" + (f" ({flags})" if flags else "") + \
        (f"; {soft}" if soft else "")


def load() -> list[float]:
    """1/5/15-minute load averages (other jobs on the machine slow every figure down)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def timed(fn, repeats: int):
    """Median CPU and wall seconds of fn() over `repeats` runs, and the last result."""
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall), out


def matmul_gflops(m: int, k: int, n: int, dtype, repeats: int = 5, min_seconds: float = 0.05) -> float:
    """Best GFLOP/s of [m, k] @ [k, n] over `repeats` timings (each at least `min_seconds`)."""
    import torch
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    a @ b   # warm-up: first-call allocation and kernel selection
    one = time.perf_counter()
    a @ b
    one = time.perf_counter() - one
    inner = max(1, int(min_seconds / max(one, 1e-6)))
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        dt = (time.perf_counter() - t0) / inner
        best = max(best, 2.0 * m * k * n / dt)
    return best / 1e9


class Peak:
    """Running maximum of the matmul peak per dtype, measured again and again between the
    throughput measurements (so a busy spell of other jobs does not set it); every sample is kept."""

    def __init__(self, shapes: list[tuple[int, int, int]], repeats: int = 3):
        self.shapes, self.repeats = shapes, repeats
        self.samples: list[dict] = []

    def measure(self, dtype, label: str = "") -> float:
        import torch
        name = str(dtype).replace("torch.", "")
        per_shape = {f"{m}x{k}x{n}": round(matmul_gflops(m, k, n, dtype, self.repeats), 1) for m, k, n in self.shapes}
        best = max(per_shape.values())
        self.samples.append({"dtype": name, "at": label, "gflops": best, "per_shape": per_shape,
                             "load": load(), "threads": torch.get_num_threads()})
        return best

    def best(self, dtype) -> float:
        name = str(dtype).replace("torch.", "")
        vals = [s["gflops"] for s in self.samples if s["dtype"] == name]
        return max(vals) if vals else float("nan")

    def last(self, dtype) -> float:
        name = str(dtype).replace("torch.", "")
        vals = [s["gflops"] for s in self.samples if s["dtype"] == name]
        return vals[-1] if vals else float("nan")

    def best_per_shape(self, dtype) -> dict:
        name = str(dtype).replace("torch.", "")
        out: dict[str, float] = {}
        for s in self.samples:
            if s["dtype"] == name:
                for k, v in s["per_shape"].items():
                    out[k] = max(out.get(k, 0.0), v)
        return out


def compose(config_name: str, overrides=()):
    """conf/<config_name>.yaml composed with these Hydra overrides, as the CLI composes it."""
    from hydra import compose as hydra_compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides))


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write JSON atomically: a temporary file in the same folder, then os.replace."""
    return write_atomic(path, json.dumps(obj, indent=2, default=_default) + "\n")


def _default(x):
    try:
        import numpy as np
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:
        pass
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
