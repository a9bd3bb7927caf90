"""GPU speed and memory at the paper's scale: baseline against DropClass (closed form) and DropClass (reference form).

Training steps of HRNetV2-W18-Small-v2 (or --arch) at 512x1024 crops, batch 12, bf16 autocast and channels-last, as in
the official recipe per GPU; evaluation at the full 1024x2048 Cityscapes resolution; and the projected wall time of
the paper's schedule (968 epochs of 2975 images) on one GPU and on four. Targets on one H100: DropClass <= 1.10x the
baseline's step time and peak memory, the schedule <= 12 hours. The reference form materialises every class-specific
feature map and may not fit in memory at this size; that is reported, not hidden.

    python benchmarks/bench_gpu.py                         # on a CUDA machine; writes benchmarks/results/gpu_<name>.json
    python benchmarks/bench_gpu.py --compile               # with torch.compile
    python benchmarks/bench_gpu.py --tiny --device cpu     # a seconds-long check of the script itself (CI)
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

EPOCHS, TRAIN_IMAGES = 968, 2975  # the official schedule and the size of Cityscapes' train split


def _sync(dev):
    if dev.type == "cuda": torch.cuda.synchronize()


def make(variant: str, arch: str, dev, compile_: bool):
    from dropclass import DropClass, DropClassLoss
    from dropclass.losses import upsampled_cross_entropy
    from dropclass.models import paper_model
    torch.manual_seed(0)
    model = paper_model(arch, 19)
    if variant != "baseline": model = DropClass(model, drop_prob=1.0, form="reference" if variant == "dropclass_reference" else "closed")
    model = model.to(dev).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.004, momentum=0.9, weight_decay=5e-4)
    net = torch.compile(model) if compile_ else model
    crit = DropClassLoss().to(dev)

    def step(x, y):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = crit(net(x), y, lam=0.5)[0] if variant != "baseline" else upsampled_cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model, step


def time_training(variant, args, dev) -> dict:
    H, W = args.crop
    x = torch.randn(args.batch, 3, H, W, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 19, (args.batch, H, W), device=dev)
    try:
        model, step = make(variant, args.arch, dev, args.compile)
        for _ in range(args.warmup): step(x, y)
        _sync(dev)
        if dev.type == "cuda": torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.reps):
            t = time.perf_counter(); step(x, y); _sync(dev); times.append(time.perf_counter() - t)
    except torch.OutOfMemoryError as e:
        return {"error": f"out of memory: {str(e).splitlines()[0][:200]}"}
    finally:
        if dev.type == "cuda": torch.cuda.empty_cache()
    med = statistics.median(times)
    res = {"step_s": med, "images_per_s": args.batch / med, "all_s": [round(t, 4) for t in times],
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None}
    res["schedule_hours_1_gpu"] = EPOCHS * TRAIN_IMAGES / res["images_per_s"] / 3600
    res["schedule_hours_4_gpus"] = res["schedule_hours_1_gpu"] / 4
    del model
    return res


@torch.inference_mode()
def time_eval(variant, args, dev) -> dict:
    H, W = args.eval_size
    model, _ = make(variant, args.arch, dev, False)
    model.eval()
    x = torch.randn(1, 3, H, W, device=dev).contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(args.warmup + args.reps):
        t = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"): model(x).argmax(1)
        _sync(dev)
        if i >= args.warmup: times.append(time.perf_counter() - t)
    return {"images_per_s": 1 / statistics.median(times)}


def main(argv=None):
    size = lambda s: tuple(int(v) for v in s.lower().split("x"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--arch", default="hrnetv2_w18_small_v2")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--crop", type=size, default=(512, 1024), help="training crop HxW")
    p.add_argument("--eval-size", type=size, default=(1024, 2048), help="evaluation image HxW")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--variants", nargs="+", default=["baseline", "dropclass", "dropclass_reference"])
    p.add_argument("--tiny", action="store_true", help="tiny sizes: checks the script, measures nothing meaningful")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.tiny: args.batch, args.crop, args.eval_size, args.reps, args.warmup = 2, (64, 128), (64, 128), 2, 1
    dev = torch.device(args.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available(): p.error("no CUDA device here; run on a GPU machine, or use --tiny --device cpu")
        torch.backends.cudnn.benchmark = True
    results = {v: {"train": time_training(v, args, dev)} for v in args.variants}
    for v in args.variants:
        if "error" not in results[v]["train"]: results[v]["eval"] = time_eval(v, args, dev)
    ratios, met = {}, {}
    b, d = results.get("baseline", {}).get("train", {}), results.get("dropclass", {}).get("train", {})
    if "step_s" in b and "step_s" in d:
        ratios["dropclass_step_time"] = d["step_s"] / b["step_s"]
        met["dropclass_step_time <= 1.10"] = ratios["dropclass_step_time"] <= 1.10
        if b["peak_gib"]:
            ratios["dropclass_peak_memory"] = d["peak_gib"] / b["peak_gib"]
            met["dropclass_peak_memory <= 1.10"] = ratios["dropclass_peak_memory"] <= 1.10
        met["schedule on 1 GPU <= 12 h"] = d["schedule_hours_1_gpu"] <= 12
    name = torch.cuda.get_device_name() if dev.type == "cuda" else platform.processor() or "cpu"
    out = {"device": name, "torch": torch.__version__, "settings": {k: v for k, v in vars(args).items() if k != "out"},
           "results": results, "ratios": ratios, "targets_met": met, "tiny": args.tiny,
           "command": " ".join([Path(sys.executable).name] + sys.argv)}
    path = args.out or Path(__file__).parent / "results" / f"gpu_{name.replace(' ', '_').replace('/', '_')}{'_tiny' if args.tiny else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    for v, r in results.items():
        t = r["train"]
        print(f"{v:20s} " + (t["error"] if "error" in t else
              f"{t['images_per_s']:7.1f} img/s train, peak {t['peak_gib'] or float('nan'):6.2f} GiB, "
              f"schedule {t['schedule_hours_1_gpu']:6.1f} h on 1 GPU; eval {r['eval']['images_per_s']:6.2f} img/s"))
    for k, v in ratios.items(): print(f"{k}: {v:.3f}")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
