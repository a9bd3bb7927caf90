"""Scenes with numpy's BLAS on one thread (today) against its default thread count, beside a two-thread training step.

The synthetic scenes make a few small matrix products each (`smooth_field`). With numpy's BLAS on its default thread
count, a second BLAS thread wakes for them and then spins for a while on the core that torch's threads need.
`dropclass.data.synthetic.one_blas_thread` keeps the products on one thread. This script trains the demo's baseline
step (8 scenes of 128x256, FPN on EfficientNet-Lite0, torch on two threads) and times the data and the model part of
each step, both ways, interleaved in one run so that the ratio is read from one machine state:

    python benchmarks/bench_blas_threads.py            # about a minute; writes benchmarks/results/blas_threads.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4, help="rounds of both ways (default 4)")
    p.add_argument("--steps", type=int, default=3, help="steps of each way per round, the first not counted (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--size", default="128x256", help="scene size HxW (default 128x256)")
    p.add_argument("--out", type=Path, default=RESULTS / "blas_threads.json")
    args = p.parse_args(argv)
    if args.steps < 2 or args.rounds < 1: p.error("--steps must be at least 2 and --rounds at least 1")

    import torch
    import torch.nn.functional as F

    import dropclass.data.synthetic as syn
    from dropclass.data.io import atomic_write_bytes
    from dropclass.machine import machine_info
    from dropclass.build import build_model, dataset_for, labels_for
    from dropclass.config import config_from

    torch.set_num_threads(args.threads)
    cfg = config_from("demo", ["method=baseline", f"crop_size={args.size}"])
    ds = dataset_for(cfg, "train")
    model = build_model(cfg, labels_for(cfg).num_classes).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    today = syn.one_blas_thread

    def step(first: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        images, masks = zip(*(ds[i] for i in range(first, first + cfg.batch_size)))
        x = torch.stack([torch.as_tensor(v) for v in images]).float().contiguous(memory_format=torch.channels_last)
        y = torch.stack([torch.as_tensor(v) for v in masks]).reshape(len(masks), *x.shape[-2:])
        t1 = time.perf_counter()
        loss = F.cross_entropy(model(x), y, ignore_index=255)
        opt.zero_grad(); loss.backward(); opt.step()
        return t1 - t0, time.perf_counter() - t1

    ways = {"blas_default_threads": contextlib.nullcontext, "one_blas_thread": today}
    times = {w: [] for w in ways}
    index = 0
    for _ in range(args.rounds):
        for way, ctx in ways.items():
            syn.one_blas_thread = ctx  # the way smooth_field's products run in this part of the round
            try:
                for k in range(args.steps):
                    r = step(index)
                    index += cfg.batch_size  # new scenes every step: nothing comes from a cache
                    if k: times[way].append(r)
            finally:
                syn.one_blas_thread = today
    out = {"command": " ".join(["python benchmarks/bench_blas_threads.py", *(argv or sys.argv[1:])]),
           "machine": machine_info(threads=args.threads), "batch_size": cfg.batch_size, "size": args.size, "ways": {}}
    for way, rs in times.items():
        out["ways"][way] = {"data_seconds_median": round(statistics.median(a for a, _ in rs), 4),
                            "model_seconds_median": round(statistics.median(b for _, b in rs), 4), "steps": len(rs)}
    d, o = out["ways"]["blas_default_threads"], out["ways"]["one_blas_thread"]
    out["data_ratio_default_over_one"] = round(d["data_seconds_median"] / o["data_seconds_median"], 2)
    out["model_ratio_default_over_one"] = round(d["model_seconds_median"] / o["model_seconds_median"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, (json.dumps(out, indent=1) + "\n").encode())
    for way, r in out["ways"].items():
        print(f"{way:22s} data {r['data_seconds_median']:.4f} s, model {r['model_seconds_median']:.4f} s per step "
              f"(median of {r['steps']})")
    print(f"data: {out['data_ratio_default_over_one']}x, model: {out['model_ratio_default_over_one']}x; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
