"""Machine and library facts every benchmark prints beside its figures."""

import importlib.metadata
import os
import platform




def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_facts():
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "sched_getaffinity": affinity,
        "mem_total_gib": _mem_total_gib(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in (
                "keras",
                "keras-hub",
                "jax",
                "jaxlib",
                "tensorflow",
                "torch",
                "numpy",
                "keras-maeclip",
            )
        },
    }
