"""This machine's matmul peak, fp32 and bf16, as `train_step.py` prints it.

Times `torch.matmul` of two square `n × n` matrices for each of `sizes`
(default 1024, 2048 and 3072) in float32 and bfloat16 (oneDNN; AMX where the
CPU has it) and reports the best of `repeats` timings over all sizes as
GFLOP/s (`2 n³` FLOPs per product). The best, not the median, since the
point is what the cores can reach when nothing else runs; on a shared
machine it is still a lower bound. (One size, 1024² best of 5, read 106
GFLOP/s fp32 in a run whose CLIP step reached 141: on this 2-vCPU VM single
products vary by ±20 %, so several sizes and more repeats.) One JSON line
on stdout, `MATMUL_PEAK_JSON: {...}`, with the best size per dtype.

Usage:
    python benchmarks/matmul_peak.py [--threads=N] [--sizes=1024,2048,3072] [--repeats=10]
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


def measure(sizes=(1024, 2048, 3072), repeats=10, threads=None):
    if threads:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    import torch

    if threads:
        torch.set_num_threads(threads)
    out = {"sizes": list(sizes), "repeats": repeats, "torch": torch.__version__,
           "torch_num_threads": torch.get_num_threads()}
    out["cpu_flags"] = sorted(_cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        for size in sizes:
            a = torch.randn(size, size).to(dtype)
            b = torch.randn(size, size).to(dtype)
            torch.matmul(a, b)  # warm-up: kernel selection, page faults
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                torch.matmul(a, b)
                best = min(best, time.perf_counter() - start)
            gflops = 2 * size**3 / best / 1e9
            if gflops > out.get(f"{name}_gflops", 0.0):
                out[f"{name}_gflops"], out[f"{name}_size"] = gflops, size
    out["size"] = out["float32_size"]  # what train_step.py prints
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,2048,3072",
                        help="comma-separated matrix sides; the best over all is reported")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    print(_PREFIX + json.dumps(measure(sizes, args.repeats, args.threads)), flush=True)


if __name__ == "__main__":
    main()
