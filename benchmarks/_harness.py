"""Benchmark plumbing: interleaved timing with medians, a ratio table, and per-variant memory in subprocesses."""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Variant:
    """One contender: `setup()` builds its data and returns a zero-argument step (which may return a sync target)."""

    name: str
    setup: Callable[[], Callable[[], object]]
    note: str = ""
    step: Callable[[], object] | None = None
    first_call_s: float | None = None
    times_ms: list[float] = field(default_factory=list)
    skipped: str = ""


def synchronize(device: str, value: object = None) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    block = getattr(value, "block_until_ready", None)  # JAX arrays
    if callable(block):
        block()


def run_interleaved(
    variants: list[Variant], device: str, rounds: int, warmup: int, steps_per_round: int
) -> None:
    """Set every variant up, time its first call, then time `rounds` rounds of each, shuffled per round."""
    for v in variants:
        if v.skipped:
            continue
        try:
            v.step = v.setup()
            start = time.perf_counter()
            synchronize(device, v.step())
            v.first_call_s = time.perf_counter() - start
            for _ in range(warmup):
                synchronize(device, v.step())
        except Exception as error:  # a contender that cannot run here is reported, not fatal
            v.skipped = f"{type(error).__name__}: {error}"[:120]
            v.step = None
    # Each round runs the variants in a new order (seeded, so runs repeat it): a variant that
    # allocates or streams hundreds of MB leaves the caches, TLB and allocator to whichever
    # runs next, and a fixed order would hand that cost to the same neighbour every round.
    order = random.Random(0)
    for _ in range(rounds):
        for v in order.sample(variants, len(variants)):
            if v.step is None:
                continue
            start = time.perf_counter()
            for _ in range(steps_per_round):
                out = v.step()
            synchronize(device, out)
            v.times_ms.append((time.perf_counter() - start) * 1e3 / steps_per_round)


def median(v: Variant) -> float | None:
    return statistics.median(v.times_ms) if v.times_ms else None


def table(
    variants: list[Variant], anchor: str, title: str, memory: dict[str, str] | None = None
) -> str:
    """A Markdown table: median ms, ratio to `anchor`, first-call seconds, and memory if measured."""
    base = next((median(v) for v in variants if v.name == anchor), None)
    header = (
        "| variant | median ms | vs "
        + anchor
        + " | first call s |"
        + (" transient memory |" if memory else "")
    )
    lines = [f"### {title}", "", header, "|" + "---|" * (4 + bool(memory))]
    for v in variants:
        m = median(v)
        if m is None:
            row = f"| {v.name} | - | - | - |"
            if memory:
                row += " - |"
            lines.append(row + f" skipped: {v.skipped}")
            continue
        ratio = f"{m / base:.2f}x" if base else "-"
        first = f"{v.first_call_s:.2f}" if v.first_call_s is not None else "-"
        row = f"| {v.name} | {m:.3f} | {ratio} | {first} |"
        if memory:
            row += f" {memory.get(v.name, '-')} |"
        lines.append(row + (f" {v.note}" if v.note else ""))
    return "\n".join(lines)


def environment(device: str) -> str:
    parts = [
        f"python {platform.python_version()}",
        f"torch {torch.__version__}",
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})",
        f"torch threads {torch.get_num_threads()}",
    ]
    if device.startswith("cuda"):
        parts.append(torch.cuda.get_device_name())
    for module in ("jax", "optax", "torchopt"):
        try:
            parts.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            parts.append(f"{module} not installed")
    return ", ".join(parts)


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where Linux does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """VmHWM (peak RSS since start or the last reset), falling back to getrusage's lifetime peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_in_subprocess(script: str, args: list[str], timeout: float = 900) -> dict:
    """Run `script --memory-worker ...` in a fresh interpreter and return the JSON it prints last."""
    cmd = [sys.executable, script, "--memory-worker", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:120]}
    return json.loads(lines[-1])
