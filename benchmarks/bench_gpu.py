"""GPU speed and memory at the paper's scale: baseline against DropClass (closed form) and DropClass (reference form).

Training steps of the paper's three models (HRNetV2-W18-Small-v1 and -v2, DeepLabV3-MobileNetV3) at 512x1024 crops,
batch 12, bf16 autocast and channels-last, as in the official recipe per GPU; evaluation at the full 1024x2048
Cityscapes resolution; peak memory of each; the projected wall time of the official schedule (the
`cityscapes-dropclass-*` presets: 59,048 iterations of 4 x 12 images, evaluated every 6,100) on one GPU and, ideally,
on four; and a torch.profiler summary of what the DropClass step adds to the baseline's (--profile). Targets on one
GPU: DropClass <= 1.10x the baseline's step time and peak memory, the schedule <= 12 hours. The reference form
materialises every class-specific feature map and may not fit in memory at this size; that is reported, not hidden.
A variant that fails (out of memory, a compile error) is recorded with its error and the others still run; the JSON
is rewritten after every measurement, so a run stopped by a time limit keeps what it measured. The JSON holds every
model under "archs" (its variants' train and eval measurements, ratios to the baseline, targets met), the first model
also under "results", "ratios" and "targets_met", and the profiler's summary under "profile".

    python benchmarks/bench_gpu.py                                  # on a CUDA machine; writes benchmarks/results/gpu_<name>.json
    python benchmarks/bench_gpu.py --profile --out gpu_eager.json   # and the profiler summary
    python benchmarks/bench_gpu.py --compile --archs hrnetv2_w18_small_v2 --variants baseline dropclass --no-eval
    python benchmarks/bench_gpu.py --tiny --device cpu --profile    # seconds: a check of the script itself, no measurement
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from dropclass.conventions import logits_of

ARCHS = ("hrnetv2_w18_small_v1", "hrnetv2_w18_small_v2", "deeplabv3_mobilenet_v3_large")
VARIANTS = ("baseline", "dropclass", "dropclass_reference")
OFFICIAL_GPUS = 4  # the official recipe trains on four GPUs of `batch_size` images each
VAL_IMAGES = 500  # Cityscapes val, evaluated at every `eval_every` and at the end
# the official recipe, used only where the presets cannot be read (dropclass.train needs segmentation-models-pytorch)
FALLBACK_SCHEDULE = {"preset": None, "iterations": 59048, "batch_per_gpu": 12, "eval_every": 6100}


def _sync(dev):
    if dev.type == "cuda": torch.cuda.synchronize()


def _free(dev):
    "Return the memory of the previous measurement (its tensors, a failed step's traceback) before the next one."
    gc.collect()
    if dev.type == "cuda": torch.cuda.empty_cache()


def _error(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0][:300]
    kind = "out of memory" if isinstance(e, torch.OutOfMemoryError) else type(e).__name__
    return f"{kind}: {text}" if text else kind


def official_schedule(arch: str) -> dict:
    "Iterations, per-GPU batch and evaluation period of the official DropClass recipe for `arch` (its preset)."
    try:
        from dropclass.config import PRESETS
    except ImportError as e:
        return {**FALLBACK_SCHEDULE, "note": f"presets not readable ({e}); the official recipe's numbers"}
    for name, p in PRESETS.items():
        if p.get("arch") == arch and p.get("dataset") == "cityscapes" and p.get("method") == "dropclass":
            return {"preset": name, "iterations": p["max_iters"], "batch_per_gpu": p["batch_size"], "eval_every": p["eval_every"]}
    return {**FALLBACK_SCHEDULE, "note": f"no cityscapes-dropclass preset for {arch}; the official recipe's numbers"}


def project(step_s: float, batch: int, sched: dict, eval_images_per_s: float | None = None) -> dict:
    """Hours of the official schedule at a measured step time. On one GPU every iteration is OFFICIAL_GPUS steps of the
    per-GPU batch (gradient accumulation); on four GPUs, one step per iteration with no communication cost (a lower bound).
    The schedule's hours add its evaluations (500 val images at every `eval_every` and at the end) when their speed is known."""
    steps_per_iter = OFFICIAL_GPUS * sched["batch_per_gpu"] / batch
    train_1 = sched["iterations"] * steps_per_iter * step_s / 3600
    evals = sched["iterations"] // sched["eval_every"] + 1
    eval_1 = evals * VAL_IMAGES / eval_images_per_s / 3600 if eval_images_per_s else None
    total = train_1 + (eval_1 or 0.0)
    return {"train_hours_1_gpu": train_1, "train_hours_4_gpus_ideal": train_1 / OFFICIAL_GPUS, "eval_hours_1_gpu": eval_1,
            "schedule_hours_1_gpu": total, "schedule_hours_4_gpus_ideal": total / OFFICIAL_GPUS,
            "schedule_includes_eval": eval_1 is not None}


def make(variant: str, arch: str, dev, compile_: bool, backend: str):
    "The model of a variant on `dev` (channels-last), its SGD optimiser, and one training step `step(x, y) -> loss parts`."
    from dropclass import DropClass, DropClassLoss
    from dropclass.losses import upsampled_cross_entropy
    from dropclass.models import paper_model
    if variant not in VARIANTS: raise ValueError(f"unknown variant {variant!r}; the variants are {', '.join(VARIANTS)}")
    torch.manual_seed(0)
    model = paper_model(arch, 19)
    if variant != "baseline":  # a class dropped in every step: the most the drop branch costs
        model = DropClass(model, drop_prob=1.0, form="reference" if variant == "dropclass_reference" else "closed")
    model = model.to(dev).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.004, momentum=0.9, weight_decay=5e-4)
    net = torch.compile(model, backend=backend) if compile_ else model
    crit = DropClassLoss().to(dev)

    def step(x, y):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = crit(net(x), y, lam=0.5)[0] if variant != "baseline" else upsampled_cross_entropy(logits_of(net(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return model, step


def _batch(args, dev, batch: int, size):
    H, W = size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, H, W, generator=g).to(dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 19, (batch, H, W), generator=g).to(dev)
    return x, y


def _dynamo_counts() -> dict:
    from torch._dynamo.utils import counters
    return {"unique_graphs": int(counters["stats"]["unique_graphs"]), "graph_breaks": int(sum(counters["graph_break"].values()))}


def time_training(variant: str, arch: str, args, dev) -> dict:
    "Median step time, images per second and peak memory of training steps of one variant."
    _free(dev)
    x, y = _batch(args, dev, args.batch, args.crop)
    if args.compile:
        torch._dynamo.reset()
        from torch._dynamo.utils import counters
        counters.clear()
    model = step = None
    try:
        model, step = make(variant, arch, dev, args.compile, args.compile_backend)
        warm = []
        for _ in range(args.warmup):  # the first steps autotune cuDNN, and compile when asked
            t = time.perf_counter(); loss = step(x, y); _sync(dev); warm.append(time.perf_counter() - t)
        if not math.isfinite(loss.item()): return {"error": f"the loss is {loss.item()} after the warm-up steps"}
        if dev.type == "cuda": torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.reps):
            t = time.perf_counter(); step(x, y); _sync(dev); times.append(time.perf_counter() - t)
    except Exception as e:  # out of memory, a compile failure: recorded, and the other variants still run
        return {"error": _error(e)}
    finally:
        model = step = None
    med = statistics.median(times)
    res = {"step_s": med, "step_s_min": min(times), "images_per_s": args.batch / med, "all_s": [round(t, 5) for t in times],
           "warmup_s": [round(t, 3) for t in warm], "loss": float(loss.item()),
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None,
           "reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if dev.type == "cuda" else None}
    if args.compile: res.update(first_step_s=warm[0], **_dynamo_counts())
    return res


@torch.inference_mode()
def time_eval(variant: str, arch: str, args, dev) -> dict:
    "Images per second and peak memory of inference at the evaluation size, batch 1, as `dropclass eval` predicts."
    _free(dev)
    model = step = None
    try:
        model, step = make(variant, arch, dev, False, args.compile_backend)
        model.eval()
        x, _ = _batch(args, dev, 1, args.eval_size)
        if dev.type == "cuda": torch.cuda.reset_peak_memory_stats()
        times = []
        for i in range(args.warmup + args.reps):
            t = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"): logits_of(model(x)).argmax(1)
            _sync(dev)
            if i >= args.warmup: times.append(time.perf_counter() - t)
    except Exception as e:
        return {"error": _error(e)}
    finally:
        model = step = None
    return {"images_per_s": 1 / statistics.median(times), "step_s": statistics.median(times),
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None}


def _op_times(prof, dev, steps: int) -> dict[str, dict]:
    "Self time (ms per step) and calls per step of every operator in a profile, on the device that runs the kernels."
    out = {}
    for e in prof.key_averages():
        us = e.self_device_time_total if dev.type == "cuda" else e.self_cpu_time_total
        if us > 0: out[e.key] = {"ms": us / 1000 / steps, "calls": e.count / steps}
    return out


def profile_extra_cost(arch: str, args, dev) -> dict:
    "torch.profiler over a few training steps of the baseline and of DropClass: per-step totals and the operators DropClass adds."
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    x, y = _batch(args, dev, args.batch, args.crop)
    ops, totals = {}, {}
    for variant in ("baseline", "dropclass"):
        _free(dev)
        model = step = None
        try:
            model, step = make(variant, arch, dev, False, args.compile_backend)
            for _ in range(args.warmup): step(x, y)
            _sync(dev)
            with profile(activities=activities) as prof:
                for _ in range(args.profile_steps): step(x, y)
                _sync(dev)
        except Exception as e:
            return {"arch": arch, "error": f"{variant}: {_error(e)}"}
        finally:
            model = step = None
        ops[variant] = _op_times(prof, dev, args.profile_steps)
        totals[variant] = sum(o["ms"] for o in ops[variant].values())
    base, drop = ops["baseline"], ops["dropclass"]
    extra = []
    for name in set(base) | set(drop):
        b, d = base.get(name, {"ms": 0.0, "calls": 0.0}), drop.get(name, {"ms": 0.0, "calls": 0.0})
        extra.append({"op": name, "baseline_ms": round(b["ms"], 4), "dropclass_ms": round(d["ms"], 4),
                      "extra_ms": round(d["ms"] - b["ms"], 4), "extra_calls": round(d["calls"] - b["calls"], 2)})
    extra.sort(key=lambda r: -r["extra_ms"])
    top = sorted(({"op": k, "ms": round(v["ms"], 4), "calls": round(v["calls"], 2)} for k, v in drop.items()), key=lambda r: -r["ms"])
    return {"arch": arch, "steps": args.profile_steps, "clock": "device (CUDA kernels)" if dev.type == "cuda" else "CPU",
            "unit": "ms per training step, self time summed over operators",
            "baseline_total_ms": totals["baseline"], "dropclass_total_ms": totals["dropclass"],
            "extra_ms": totals["dropclass"] - totals["baseline"], "ratio": totals["dropclass"] / totals["baseline"],
            "top_extra_ops": extra[:args.profile_top], "top_dropclass_ops": top[:args.profile_top]}


def arch_summary(res: dict) -> tuple[dict, dict]:
    "Ratios to the baseline and the targets for one architecture's results."
    ratios, met = {}, {}
    b = res.get("baseline", {}).get("train", {})
    for v, name in (("dropclass", "dropclass"), ("dropclass_reference", "reference")):
        d = res.get(v, {}).get("train", {})
        if "step_s" in b and "step_s" in d:
            ratios[f"{name}_step_time"] = d["step_s"] / b["step_s"]
            if b.get("peak_gib") and d.get("peak_gib"): ratios[f"{name}_peak_memory"] = d["peak_gib"] / b["peak_gib"]
    if "dropclass_step_time" in ratios: met["dropclass_step_time <= 1.10"] = ratios["dropclass_step_time"] <= 1.10
    if "dropclass_peak_memory" in ratios: met["dropclass_peak_memory <= 1.10"] = ratios["dropclass_peak_memory"] <= 1.10
    d = res.get("dropclass", {}).get("train", {})
    if "schedule_hours_1_gpu" in d: met["schedule on 1 GPU <= 12 h"] = d["schedule_hours_1_gpu"] <= 12
    return ratios, met


def device_name(dev) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu"


def main(argv=None):
    size = lambda s: tuple(int(v) for v in s.lower().split("x"))
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(description=doc[0], epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:<index> or cpu")
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS, metavar="ARCH",
                   help=f"models to measure (default: all of {', '.join(ARCHS)})")
    p.add_argument("--arch", choices=ARCHS, default=None, metavar="ARCH", help="one model only: the same as --archs ARCH")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, metavar="VARIANT",
                   help=f"default: {' '.join(VARIANTS)}")
    p.add_argument("--batch", type=int, default=12, help="training batch (default 12, the official per-GPU batch)")
    p.add_argument("--crop", type=size, default=(512, 1024), help="training crop HxW (default 512x1024)")
    p.add_argument("--eval-size", type=size, default=(1024, 2048), help="evaluation image HxW (default 1024x2048)")
    p.add_argument("--reps", type=int, default=10, help="timed steps per measurement (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3; 6 with --compile)")
    p.add_argument("--compile", action="store_true", help="torch.compile every model")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (default: inductor on CUDA, eager on CPU)")
    p.add_argument("--no-eval", action="store_true", help="skip the inference measurement")
    p.add_argument("--profile", action="store_true", help="profile baseline and DropClass training steps (see --profile-arch)")
    p.add_argument("--profile-arch", default="hrnetv2_w18_small_v2", choices=ARCHS, metavar="ARCH",
                   help="the model profiled (default hrnetv2_w18_small_v2)")
    p.add_argument("--profile-steps", type=int, default=3, help="profiled steps (default 3)")
    p.add_argument("--profile-top", type=int, default=12, help="operators listed (default 12)")
    p.add_argument("--tiny", action="store_true", help="tiny sizes and a couple of steps: checks the script, measures nothing")
    p.add_argument("--out", type=Path, default=None, help="JSON file to write (default benchmarks/results/gpu_<device>.json)")
    args = p.parse_args(argv)
    if args.arch: args.archs = [args.arch]
    if args.tiny: args.batch, args.crop, args.eval_size, args.reps, args.warmup, args.profile_steps = 2, (64, 128), (64, 128), 2, 1, 1
    # compilation, then a recompile when the dropped class changes
    elif args.compile and args.warmup < 6: args.warmup = 6
    if min(args.batch, args.reps, args.warmup, args.profile_steps) < 1: p.error("--batch, --reps, --warmup and --profile-steps must be at least 1")
    try: dev = torch.device(args.device)
    except RuntimeError: p.error(f"--device must be cuda, cuda:<index> or cpu, got {args.device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available(): p.error("no CUDA device here; run on a GPU machine, or use --tiny --device cpu")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
    if args.compile_backend is None: args.compile_backend = "inductor" if dev.type == "cuda" else "eager"
    name = device_name(dev)
    path = args.out or Path(__file__).parent / "results" / f"gpu_{name.replace(' ', '_').replace('/', '_')}{'_tiny' if args.tiny else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    from dropclass.machine import machine_info
    out = {"device": name, "machine": machine_info(), "torch": torch.__version__, "cuda": torch.version.cuda, "tiny": args.tiny, "compile": args.compile,
           "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items() if k != "out"},
           "archs": {}, "command": " ".join([Path(sys.executable).name] + (sys.argv if argv is None else [__file__, *argv]))}
    write = lambda: path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    t0 = time.perf_counter()
    if args.profile:  # first: short, and kept when a time limit stops the measurements below
        out["profile"] = pr = profile_extra_cost(args.profile_arch, args, dev)
        print("profile: " + (pr["error"] if "error" in pr else
              f"{pr['baseline_total_ms']:.1f} ms baseline, {pr['dropclass_total_ms']:.1f} ms DropClass per step ({pr['clock']}); "
              f"most added: " + ", ".join(f"{r['op']} +{r['extra_ms']:.2f} ms" for r in pr["top_extra_ops"][:4])), flush=True)
        write()
    for arch in args.archs:
        sched = official_schedule(arch)
        entry = out["archs"][arch] = {"schedule": sched, "variants": {}}
        for v in args.variants:
            r = entry["variants"][v] = {"train": time_training(v, arch, args, dev)}
            if not args.no_eval and "error" not in r["train"]: r["eval"] = time_eval(v, arch, args, dev)
            if "step_s" in r["train"]:
                r["train"].update(project(r["train"]["step_s"], args.batch, sched, r.get("eval", {}).get("images_per_s")))
            entry["ratios"], entry["targets_met"] = arch_summary(entry["variants"])
            if arch == args.archs[0]:  # the first model also at the top level, the layout of a one-model run
                out.update(results=entry["variants"], ratios=entry["ratios"], targets_met=entry["targets_met"])
            write()
            t = r["train"]
            print(f"{arch:30s} {v:20s} " + (t["error"] if "error" in t else
                  f"{t['step_s'] * 1000:8.1f} ms/step {t['images_per_s']:7.1f} img/s, peak "
                  f"{t['peak_gib'] if t['peak_gib'] is not None else float('nan'):6.2f} GiB, official schedule "
                  f"{t['schedule_hours_1_gpu']:6.1f} h on 1 GPU"
                  + (f"; eval {r['eval']['images_per_s']:6.2f} img/s" if "images_per_s" in r.get("eval", {}) else "")), flush=True)
        for k, v in entry["ratios"].items(): print(f"  {k}: {v:.3f}")
    out["wall_s"] = time.perf_counter() - t0
    write()
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
