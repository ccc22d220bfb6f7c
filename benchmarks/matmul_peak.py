"""This machine's matmul peak, fp32 and bf16, as `train_step.py` prints it.

Times `torch.matmul` of two square `n × n` matrices (default 1024) in
float32 and bfloat16 (oneDNN; AMX where the CPU has it) and reports the best
of `repeats` timings as GFLOP/s (`2 n³` FLOPs per product). The best, not
the median, since the point is what the cores can reach when nothing else
runs; on a shared machine it is still a lower bound. One JSON line on
stdout, `MATMUL_PEAK_JSON: {...}`.

Usage:
    python benchmarks/matmul_peak.py [--threads=N] [--size=1024] [--repeats=5]
"""

import argparse
import json
import os
import time

_PREFIX = "MATMUL_PEAK_JSON: "


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def measure(size=1024, repeats=5, threads=None):
    if threads:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    import torch

    if threads:
        torch.set_num_threads(threads)
    out = {"size": size, "repeats": repeats, "torch": torch.__version__,
           "torch_num_threads": torch.get_num_threads()}
    out["cpu_flags"] = sorted(_cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        torch.matmul(a, b)  # warm-up: kernel selection, page faults
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - start)
        out[f"{name}_gflops"] = 2 * size**3 / best / 1e9
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    print(_PREFIX + json.dumps(measure(args.size, args.repeats, args.threads)), flush=True)


if __name__ == "__main__":
    main()
