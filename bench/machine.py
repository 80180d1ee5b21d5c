"""One line describing the machine a benchmark ran on: CPU, cores, load, the runtimes in use."""

from __future__ import annotations

import os
import platform
import sys


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def describe() -> str:
    """Torch is named only when something already imported it: the serving benches run without it."""
    import onnxruntime

    runtimes = [f"onnxruntime {onnxruntime.__version__}"]
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        runtimes.append(f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{cpu_model()}, {os.cpu_count()} CPUs, load average {load}; {', '.join(runtimes)}; "
            f"Python {platform.python_version()}")
