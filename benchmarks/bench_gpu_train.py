"""A few hundred iterations of a paper-scale preset on full-resolution synthetic scenes: does the loss fall, and does the
data loader keep the GPU busy?

The run is the library's own training loop (`prepare_run`, `train_step`) with the preset `cityscapes-dropclass-hrnet-v2`
(HRNetV2-W18-Small-v2, 512x1024 crops, random scale 0.5-2.0, batch 12, SGD lr 0.004, HRNet's class weights, bf16,
channels-last, the preset's DataLoader workers) on synthetic street scenes drawn at the Cityscapes size of 1024x2048.
The schedule is compressed to the run's length (lambda and p ramp over ten epochs of max_iters/10 iterations, the
learning rate decays to zero at the end), so that every part of the DropClass loss is exercised. Three timings:

- the step time of the run itself, batches coming from the DataLoader (median after the first steps);
- the step time on one pre-loaded batch on the device (no data loading: what the GPU alone needs);
- the loader alone: batches per second with the preset's workers and with every core but one.

The GPU is kept busy when the two step times agree (gpu_busy_fraction = pre-loaded / loader step time near 1) and the
loader alone delivers more images per second than the GPU consumes.

    python benchmarks/bench_gpu_train.py --out gpu_train.json                   # on a CUDA machine, about a minute or two
    python benchmarks/bench_gpu_train.py --iters 600 --preset cityscapes-dropclass-deeplabv3-mobilenet
    python benchmarks/bench_gpu_train.py --tiny --device cpu --out /tmp/t.json  # seconds: checks the script itself
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

STEP_PARTS = ("total", "ce", "ce_drop", "sup")


def _sync(dev):
    if dev.type == "cuda": torch.cuda.synchronize()


def window_means(values: list[float], frac: float = 0.1) -> tuple[float, float]:
    "Mean of the first and of the last `frac` of a series (at least one value each)."
    n = max(1, int(len(values) * frac))
    return statistics.fmean(values[:n]), statistics.fmean(values[-n:])


def loader_throughput(cfg, workers: int, batches: int, dev) -> dict:
    "Images per second of the training DataLoader alone (the run's dataset, order and augmentation), after its first batch."
    from dropclass.build import dataset_for
    from dropclass.sampling import EpochOrder, training_loader
    ds = dataset_for(cfg, cfg.train_split, length=cfg.train_length)
    loader = training_loader(cfg, ds, EpochOrder(len(ds), cfg.seed, cfg.batch_size), device=dev, num_workers=workers)
    it = iter(loader)
    t_first = time.perf_counter()
    next(it)  # the workers start and fill their queues
    t0 = time.perf_counter()
    for _ in range(batches): next(it)
    dt = time.perf_counter() - t0
    del it
    return {"workers": workers, "batches": batches, "first_batch_s": t0 - t_first, "batches_per_s": batches / dt,
            "images_per_s": batches * cfg.batch_size / dt}


def main(argv=None):
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(description=" ".join(doc[0].split()), epilog="\n\n".join(doc[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cityscapes-dropclass-hrnet-v2", help="training preset (default cityscapes-dropclass-hrnet-v2)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:<index> or cpu")
    p.add_argument("--iters", type=int, default=300, help="training iterations (default 300)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds for the training iterations: stop early when they are spent (the JSON says so); default none")
    p.add_argument("--scene-size", default="1024x2048", help="HxW of the synthetic scenes (default 1024x2048, Cityscapes')")
    p.add_argument("--preloaded-steps", type=int, default=30, help="steps timed on one pre-loaded batch (default 30)")
    p.add_argument("--loader-batches", type=int, default=15, help="batches timed for the loader alone (default 15)")
    p.add_argument("--workers", type=int, nargs="+", default=None,
                   help="worker counts for the loader alone (default: the preset's, and every core but one)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="a further setting of the run")
    p.add_argument("--tiny", action="store_true", help="tiny scenes, batch 2, a few steps: checks the script, measures nothing")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/gpu_train.json)")
    args = p.parse_args(argv)
    try: H, W = (int(v) for v in args.scene_size.lower().split("x"))
    except ValueError: p.error(f"--scene-size must be HxW, e.g. 1024x2048; got {args.scene_size!r}")
    if args.tiny: args.iters, (H, W), args.preloaded_steps, args.loader_batches = 6, (64, 128), 3, 2
    if min(args.iters, args.preloaded_steps, args.loader_batches) < 1: p.error("--iters, --preloaded-steps and --loader-batches must be at least 1")
    try: dev = torch.device(args.device)
    except RuntimeError: p.error(f"--device must be cuda, cuda:<index> or cpu, got {args.device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available(): p.error("no CUDA device here; run on a GPU machine, or use --tiny --device cpu")

    from dropclass.config import config_from
    # the run folder; made by the run, removed after
    work = Path(tempfile.gettempdir()) / f"dropclass_gpu_train_{os.getpid()}"
    settings = {"dataset": "synthetic", "dataset_args": {"size": [H, W]}, "train_length": 2975, "eval_length": 4,
                "eval_splits": (), "max_iters": args.iters, "iters_per_epoch": max(args.iters // 10, 1), "eval_every": 0,
                "diag_length": 0, "ckpt_every": 10**9, "log_every": 10**9, "progress": False, "resume": False,
                "device": args.device, "out_dir": str(work / "run")}
    if args.tiny: settings.update(crop_size=(64, 128), batch_size=2, num_workers=1)
    bad = [o for o in args.overrides if "=" not in o]
    if bad: p.error(f"--set takes KEY=VALUE, got {bad[0]!r}")
    try: cfg = config_from(args.preset, {**settings, **dict(o.split("=", 1) for o in args.overrides)})
    except ValueError as e: p.error(str(e))
    if args.tiny: args.workers = [0, 1]
    args.workers = args.workers or sorted({cfg.num_workers, max((os.cpu_count() or 2) - 1, 1)})
    out_path = args.out or Path(__file__).parent / "results" / "gpu_train.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    from dropclass.machine import machine_info
    out = {"device": name, "machine": machine_info(), "torch": torch.__version__, "tiny": args.tiny, "preset": args.preset,
           "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
           "schedule": f"compressed: max_iters={cfg.max_iters}, ramps over {cfg.iters_per_epoch}-iteration epochs",
           "command": " ".join([Path(sys.executable).name, __file__, *(sys.argv[1:] if argv is None else argv)])}
    write = lambda: out_path.write_text(json.dumps(out, indent=2, default=str) + "\n")

    t0 = time.perf_counter()
    try:
        measure(cfg, args, dev, out, write)
    # a loader that cannot start, out of memory, a diverged run: recorded in the JSON, then raised
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:400]}"
        write()
        raise SystemExit(f"bench_gpu_train.py: {out['error']} (recorded in {out_path})") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["wall_s"] = time.perf_counter() - t0
    write()
    tm, ls = out["timing"], out["loss_summary"]
    print(f"loss {ls['first_window_total']:.4f} -> {ls['last_window_total']:.4f} (ce {ls['first_window_ce']:.4f} -> "
          f"{ls['last_window_ce']:.4f}); step {tm['loader_step_s'] * 1000:.0f} ms with the loader, "
          f"{tm['preloaded_step_s'] * 1000:.0f} ms pre-loaded (GPU busy {100 * tm['gpu_busy_fraction']:.0f} %); loader alone: "
          + ", ".join(f"{l['workers']} workers " + (f"{l['images_per_s']:.1f} img/s" if "error" not in l else l["error"])
                      for l in tm["loader_alone"])
          + f"; the GPU takes {tm['gpu_images_per_s']:.1f} img/s")
    print(f"wrote {out_path}")
    return out


def measure(cfg, args, dev, out: dict, write) -> None:
    "Train, then time the pre-loaded step and the loader alone; every result goes into `out`, written as it comes."
    from dropclass.train import prepare_run, train_step
    t0 = time.perf_counter()
    run = prepare_run(cfg)
    out["prepare_s"] = time.perf_counter() - t0
    run.net.train()
    if dev.type == "cuda": torch.cuda.reset_peak_memory_stats()
    steps, parts_log = [], {k: [] for k in STEP_PARTS + ("p", "lam")}
    t_run = time.perf_counter()
    for it in range(cfg.max_iters):  # the run itself: batches from the DataLoader
        t = time.perf_counter()
        parts = train_step(run, it)  # reads the loss (a synchronisation) every step
        _sync(dev)
        steps.append(time.perf_counter() - t)
        run.step = it + 1
        for k in parts_log: parts_log[k].append(round(float(parts.get(k, float("nan"))), 5))
        stop = args.time_limit is not None and time.perf_counter() - t_run > args.time_limit and it + 1 >= 2
        if (it + 1) % max(cfg.max_iters // 10, 1) == 0 or stop:
            print(f"iteration {it + 1}/{cfg.max_iters}: loss {parts['total']:.4f} (ce {parts['ce']:.4f}), "
                  f"{steps[-1] * 1000:.0f} ms/step", flush=True)
        if stop:
            print(f"stopped after {it + 1} iterations: the time limit of {args.time_limit:g} s is spent", flush=True)
            break
    run_s = time.perf_counter() - t_run
    skip = min(10, len(steps) // 2)  # the first steps start the workers and autotune cuDNN
    loader_step = statistics.median(steps[skip:])
    first_total, last_total = window_means(parts_log["total"])
    first_ce, last_ce = window_means(parts_log["ce"])
    out.update(iterations=len(steps), stopped_early=len(steps) < cfg.max_iters, run_s=run_s, loss=parts_log,
               step_s=[round(s, 4) for s in steps],
               loss_summary={"first_window_total": first_total, "last_window_total": last_total,
                             "first_window_ce": first_ce, "last_window_ce": last_ce,
                             "window": max(1, int(len(steps) * 0.1)),
                             "ce_falls": last_ce < first_ce, "finite": all(math.isfinite(v) for v in parts_log["total"])},
               peak_gib=torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None)
    write()

    batch = next(run.batches)  # one batch on the device, reused: the step without data loading
    batch = tuple(t.to(dev, non_blocking=True) for t in batch)
    run.batches = itertools.repeat(batch)  # the run's DataLoader and its workers go
    pre = []
    for k in range(args.preloaded_steps + 2):
        t = time.perf_counter(); train_step(run, cfg.max_iters - 1); _sync(dev)
        if k >= 2: pre.append(time.perf_counter() - t)
    preloaded_step = statistics.median(pre)
    gpu_images_per_s = cfg.batch_size / preloaded_step
    out["timing"] = {"loader_step_s": loader_step, "preloaded_step_s": preloaded_step,
                     "gpu_busy_fraction": preloaded_step / loader_step, "run_images_per_s": cfg.batch_size / loader_step,
                     "gpu_images_per_s": gpu_images_per_s, "run_workers": cfg.num_workers, "loader_alone": []}
    write()
    for w in args.workers:
        try: out["timing"]["loader_alone"].append(loader_throughput(cfg, w, args.loader_batches, dev))
        except Exception as e:
            out["timing"]["loader_alone"].append({"workers": w, "error": f"{type(e).__name__}: {str(e)[:300]}"})
    same = next((l for l in out["timing"]["loader_alone"] if l["workers"] == cfg.num_workers and "error" not in l), None)
    out["timing"]["loader_keeps_up"] = same["images_per_s"] >= gpu_images_per_s if same else None
    out["timing"]["workers_needed_estimate"] = (math.ceil(gpu_images_per_s / (same["images_per_s"] / cfg.num_workers))
                                                if same and cfg.num_workers > 0 else None)


if __name__ == "__main__":
    main()
