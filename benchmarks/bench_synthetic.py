"""Speed of the synthetic street scenes on one CPU core, written to JSON.

Measures scenes per second of `render_street` and of `SyntheticStreets[i]` (which adds the conversion to tensors) at
128x256 (target: >= 200 per second), the same at larger sizes for reference, the writer's throughput (PNG
encoding and atomic writes included), and the class statistics of the training set (masks counted per second,
target >= 500: `class_statistics` reads labels only, without painting the images). BLAS and OpenMP are limited to one thread before NumPy and torch load.

    python benchmarks/bench_synthetic.py          # writes benchmarks/results/synthetic_cpu.json
"""
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"): os.environ[var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dropclass.data.balance import class_statistics  # noqa: E402
from dropclass.data.synthetic import SyntheticStreets, render_street, write_synthetic  # noqa: E402
from dropclass.machine import machine_info  # noqa: E402

TARGET = 200.0  # scenes per second at 128x256 on one core
STATS_TARGET = 500.0  # masks per second counted by class_statistics at 128x256 on one core


def rate(fn, n, repeats):
    "Best-of and median scenes per second over `repeats` runs of `n` calls."
    rates = []
    for r in range(repeats):
        t = time.perf_counter()
        for i in range(n): fn(r * n + i)
        rates.append(n / (time.perf_counter() - t))
    return {"median_per_s": statistics.median(rates), "best_per_s": max(rates), "runs_per_s": [round(v, 1) for v in rates]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300, help="scenes per timed run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "synthetic_cpu.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    render_street(0, 0)  # warm-up: caches, imports
    res = {"render_128x256": rate(lambda i: render_street(0, i), args.n, args.repeats)}
    ds = SyntheticStreets(length=args.n * args.repeats)
    res["dataset_128x256"] = rate(lambda i: ds[i], args.n, args.repeats)
    for H, W in ((256, 512), (512, 1024)):
        res[f"render_{H}x{W}"] = rate(lambda i: render_street(0, i, size=(H, W)), max(args.n // (H // 128) ** 2, 10), 1)
    with tempfile.TemporaryDirectory() as tmp:
        n = max(args.n // 3, 20)
        t = time.perf_counter()
        write_synthetic(tmp, "train", length=n, progress=False)
        res["write_128x256"] = {"median_per_s": n / (time.perf_counter() - t)}
    stats_set = SyntheticStreets(split="train", length=1000)
    res["class_statistics_128x256"] = rate(lambda r: class_statistics(stats_set, progress=False), 1, args.repeats)
    res["class_statistics_128x256"] = {k: (v * len(stats_set) if k != "runs_per_s" else [round(x * len(stats_set), 1) for x in v])
                                       for k, v in res["class_statistics_128x256"].items()}  # masks per second
    main_rate = res["render_128x256"]["median_per_s"]
    out = {"machine": {**machine_info(threads=1), "numpy": np.__version__},
           "results": res, "target_per_s_128x256": TARGET, "target_met": main_rate >= TARGET,
           "class_statistics_target_per_s": STATS_TARGET,
           "class_statistics_target_met": res["class_statistics_128x256"]["median_per_s"] >= STATS_TARGET,
           "command": " ".join([Path(sys.executable).name] + sys.argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for k, v in res.items(): print(f"{k:18s} {v['median_per_s']:8.1f} scenes/s")
    print(f"target >= {TARGET:.0f}/s at 128x256 on one core: {'met' if out['target_met'] else 'NOT met'}; wrote {args.out}")


if __name__ == "__main__":
    main()
