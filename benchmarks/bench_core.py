"""Speed and memory of DropClass's core, written to JSON.

1. The class-feature step (Eq. 2-4), forward + backward: the reference form, which materialises every A^c,
   against the closed form, at B=2, K=270, 128x256, C=19 (HRNetV2-W18 features of a 512x1024 crop).
2. One training step of an smp model wrapped in DropClass against the same model's plain cross-entropy step
   (FPN-resnet18, B=2, 256x512 by default), with a class dropped in every step (p = 1, the most expensive case).
   The baseline is trained as smp users do, torch's cross-entropy on the model's output; "baseline_lean" gives the
   baseline dropclass's memory-lean cross-entropy too (logits at the classifier's resolution), so that the cost of
   the drop branch itself can be read off as well.

Peak memory on the CPU is measured in a fresh process per case: the kernel's peak resident set size (VmHWM, reset
through /proc/self/clear_refs just before the work) minus the resident size at that moment, with glibc's mmap
threshold fixed so that freed tensors go back to the system. On CUDA it is torch.cuda.max_memory_allocated above the
memory allocated before the work. Times are medians of interleaved repetitions in one process (with the default
allocator), so the ratios compare like with like on a shared machine.

    python benchmarks/bench_core.py                    # CPU, writes benchmarks/results/core_cpu.json
    python benchmarks/bench_core.py --device cuda      # writes benchmarks/results/core_cuda.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from dropclass.machine import machine_info

RESULTS = Path(__file__).parent / "results"


MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}  # memory children: large allocations via mmap, freed back to the OS


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"): return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    "Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; False where the kernel does not allow it."
    try:
        with open("/proc/self/clear_refs", "w") as f: f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- the measured work
def class_feature_case(form: str, device: str, B=2, K=270, H=128, W=256, C=19):
    "Inputs and one forward + backward of the class-feature step in the given form."
    from dropclass.features import class_features, drop_average, dropped_features
    from dropclass.importance import conv1x1_importance

    g = torch.Generator().manual_seed(0)
    A = torch.randn(B, K, H, W, generator=g).relu_().to(device).requires_grad_()  # post-ReLU features
    Wt = torch.randn(C, K, generator=g).to(device).requires_grad_()
    cot = torch.randn(B, K, H, W, generator=g).to(device)

    def step():
        A.grad = Wt.grad = None
        if form == "reference": out = drop_average(class_features(A, conv1x1_importance(Wt)), 3)
        else: out = dropped_features(A, Wt, 3)
        out.backward(cot)

    return step


def train_step_case(form: str, device: str, arch="FPN", encoder="resnet18", B=2, H=256, W=512, C=19):
    "Model, optimizer, batch and one training step: the baseline's cross-entropy or DropClass's full objective."
    import segmentation_models_pytorch as smp
    from dropclass import DropClass, DropClassLoss
    from dropclass.adapters import find_adapter
    from dropclass.losses import cross_entropy, upsampled_cross_entropy

    torch.manual_seed(0)
    model = getattr(smp, arch)(encoder_name=encoder, encoder_weights=None, classes=C)
    if form == "dropclass": model = DropClass(model, drop_prob=1.0)
    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(B, 3, H, W, device=device)
    y = torch.randint(0, C, (B, H, W), device=device)
    crit = DropClassLoss()

    ad = find_adapter(model) if form == "baseline_lean" else None

    def step():
        if form == "dropclass": loss, _ = crit(model(x), y, lam=0.5)
        elif form == "baseline_lean":
            logits = ad.get_classifier(model)(ad.features(model, x))
            loss = upsampled_cross_entropy(logits, y, lambda t: ad.output(model, t, x))
        else: loss = cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


CASES = {"class_features": class_feature_case, "train_step": train_step_case}


def sync(device):
    if device.startswith("cuda"): torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ measurements
def peak_memory_child(case: str, form: str, device: str, kwargs: dict) -> dict:
    "Run in a fresh process: build the case, then measure the peak memory of one step."
    step = CASES[case](form, device, **kwargs)
    if device.startswith("cuda"):
        step(); sync(device)  # warm-up: cuDNN workspaces, grads and optimizer state exist before measuring
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step(); sync(device)
        return {"peak_bytes": torch.cuda.max_memory_allocated() - before}
    reset = reset_peak_rss()
    before, hwm_before = _status_bytes("VmRSS"), _status_bytes("VmHWM")
    step()
    return {"peak_bytes": _status_bytes("VmHWM") - before, "rss_before": before, "hwm_before": hwm_before,
            "hwm_reset": reset}


def peak_memory(case, form, device, kwargs) -> int:
    cmd = [sys.executable, __file__, "--child", json.dumps([case, form, device, kwargs])]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **MEMORY_ENV})
    if out.returncode != 0: raise RuntimeError(f"memory measurement of {case}/{form} failed:\n{out.stderr}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if "hwm_before" in res and res["hwm_before"] > res["rss_before"] + res["peak_bytes"]:
        print(f"  warning: {case}/{form}: the peak counter could not be reset and the process peaked before the step; "
              "its memory reading is a lower bound")
    return res["peak_bytes"]


def times(case, forms, device, kwargs, reps: int) -> dict[str, list[float]]:
    "Interleaved timings of each form's step after one warm-up each."
    steps = {f: CASES[case](f, device, **kwargs) for f in forms}
    for s in steps.values(): s(); sync(device)
    out = {f: [] for f in forms}
    for _ in range(reps):
        for f, s in steps.items():
            sync(device); t = time.perf_counter(); s(); sync(device)
            out[f].append(time.perf_counter() - t)
    return out


def compare(case, forms, device, kwargs, reps) -> dict:
    print(f"{case}: {' vs '.join(forms)} on {device}, {kwargs}")
    mem = {f: peak_memory(case, f, device, kwargs) for f in forms}
    t = times(case, forms, device, kwargs, reps)
    res = {"config": kwargs, "repetitions": reps}
    for f in forms:
        res[f] = {"median_s": statistics.median(t[f]), "all_s": [round(v, 4) for v in t[f]], "peak_mib": mem[f] / 2**20}
        print(f"  {f:10s} median {res[f]['median_s']:.4f} s   peak {res[f]['peak_mib']:.1f} MiB")
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of each form")
    p.add_argument("--arch", default="FPN", help="smp architecture of the training-step comparison")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--size", default="256x512", help="HxW of the training-step comparison")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/core_<device>.json)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(peak_memory_child(*json.loads(args.child))))
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available(): p.error("--device cuda, but CUDA is not available")
    H, W = (int(v) for v in args.size.lower().split("x"))

    cf = compare("class_features", ["reference", "closed"], args.device, {}, reps=max(2, args.reps // 2))
    ts = compare("train_step", ["baseline", "baseline_lean", "dropclass"], args.device,
                 {"arch": args.arch, "encoder": args.encoder, "B": args.batch, "H": H, "W": W}, reps=args.reps)
    ratios = {
        "class_features_memory_reduction": cf["reference"]["peak_mib"] / cf["closed"]["peak_mib"],
        "class_features_speedup": cf["reference"]["median_s"] / cf["closed"]["median_s"],
        "dropclass_step_time_ratio": ts["dropclass"]["median_s"] / ts["baseline"]["median_s"],
        "dropclass_step_memory_ratio": ts["dropclass"]["peak_mib"] / ts["baseline"]["peak_mib"],
        "dropclass_vs_lean_baseline_time_ratio": ts["dropclass"]["median_s"] / ts["baseline_lean"]["median_s"],
        "dropclass_vs_lean_baseline_memory_ratio": ts["dropclass"]["peak_mib"] / ts["baseline_lean"]["peak_mib"],
    }
    targets = {"class_features_memory_reduction": (">=", 8.0), "class_features_speedup": (">=", 5.0),
               "dropclass_step_time_ratio": ("<=", 1.15), "dropclass_step_memory_ratio": ("<=", 1.15)}
    met = {k: (ratios[k] >= v if op == ">=" else ratios[k] <= v) for k, (op, v) in targets.items()}
    result = {
        "machine": {"device": args.device, **machine_info(),
                    "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None},
        "class_features": cf, "train_step": ts, "ratios": ratios,
        "targets": {k: f"{op} {v}" for k, (op, v) in targets.items()}, "targets_met": met,
        "command": " ".join([Path(sys.executable).name] + sys.argv),
    }
    out = args.out or RESULTS / f"core_{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in ratios.items():
        goal = f"  (target {targets[k][0]} {targets[k][1]}: {'met' if met[k] else 'NOT met'})" if k in targets else ""
        print(f"{k:40s} {v:7.2f}{goal}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
