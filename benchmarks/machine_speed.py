"""How slow this machine is against the one the dry run's time limits were set on, for limits that scale with the machine.

Two fixed workloads, each timed three times (the median is kept): interpreter work (what torch.compile's tracing, model
building and data generation spend their time on) and single-threaded float32 convolutions forward and backward (what a
training step spends its time on). Each median is divided by the same workload's median on the reference machine, a
2-core AMD EPYC (x86-64) with torch 2.14.1 on which `bash benchmarks/gpu_run.sh --tiny --device cpu` took 141 s; the
slowness is the larger of the two ratios, never below 1, so that limits only ever grow. A machine that is busy with
other work reads as slower, which is what a time limit on it needs.

    python benchmarks/machine_speed.py            # prints the slowness, e.g. 1.00
    python benchmarks/machine_speed.py --json     # and what it measured
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

# the medians of the two workloads on the reference machine, in seconds
REFERENCE_S = {"interpreter": 0.42, "convolution": 0.43}


def _interpreter() -> float:
    t = time.perf_counter()
    table: dict[int, list[int]] = {}
    for i in range(1_500_000):
        table.setdefault(i % 997, []).append(i * 3 // 7)
    sum(len(v) for v in table.values())
    return time.perf_counter() - t


def _convolution() -> float:
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 32, 64, 128, generator=g, requires_grad=True)
        w = torch.randn(32, 32, 3, 3, generator=g, requires_grad=True)
        t = time.perf_counter()
        for _ in range(12):
            torch.nn.functional.conv2d(x, w, padding=1).square().mean().backward()
        return time.perf_counter() - t
    finally:
        torch.set_num_threads(threads)


def measure(repeats: int = 3) -> dict:
    "Medians of the two workloads, their ratios to the reference machine's, and the slowness (the larger ratio, at least 1)."
    _convolution()  # the first call pays for loading torch's kernels
    seconds = {"interpreter": statistics.median(_interpreter() for _ in range(repeats)),
               "convolution": statistics.median(_convolution() for _ in range(repeats))}
    ratios = {k: seconds[k] / REFERENCE_S[k] for k in seconds}
    return {"seconds": seconds, "reference_seconds": REFERENCE_S, "ratios": ratios, "slowness": max(1.0, *ratios.values())}


def main(argv=None) -> int:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(description=doc[0], epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the measurements as JSON, not only the slowness")
    args = p.parse_args(argv)
    m = measure()
    print(json.dumps(m, indent=2) if args.json else f"{m['slowness']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
