"""The last step of a GPU session (benchmarks/gpu_run.sh): read the JSON files the steps wrote and write summary.json.

summary.json names the device, lists every step with its status (ok, failed, timeout, skipped), exit code,
seconds and time limit (with the session's time scale and budget), and lifts the headline numbers out of each file: step time and peak memory of DropClass against the baseline
per model, the profiler's extra cost, the compiled speed-up, the loss and the loader of the training run, and the
paired difference DropClass - baseline over seeds. A missing or broken file is reported in its section, not raised.

    python benchmarks/gpu_summary.py --dir benchmarks/results/gpu --steps steps.tsv --device cuda
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from pathlib import Path

# what each step writes, relative to the output folder
FILES = {"bench_gpu": "bench_gpu.json", "bench_gpu_train": "bench_gpu_train.json", "compare_seeds": "compare_seeds.json",
         "bench_gpu_compile": "bench_gpu_compile.json"}


def device_name(device: str) -> str:
    "torch.cuda.get_device_name for a CUDA device that is there, else 'cpu'."
    try:
        import torch
        if device.startswith("cuda") and torch.cuda.is_available(): return torch.cuda.get_device_name(torch.device(device))
    except Exception as e:  # a broken torch install: say so in the summary rather than fail the last step
        return f"unknown ({type(e).__name__}: {e})"
    return "cpu"


def read_steps(path: Path | None) -> dict:
    "name -> {status, rc, seconds, limit_s} from the tab-separated file gpu_run.sh appends to (one line per step)."
    steps = {}
    if path is None or not path.is_file(): return steps
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) not in (4, 5): continue
        name, status, rc, seconds, limit = (parts + ["-"])[:5]
        steps[name] = {"status": status, "rc": int(rc) if rc.lstrip("-").isdigit() else None,
                       "seconds": int(seconds) if seconds.isdigit() else None, "limit_s": int(limit) if limit.isdigit() else None}
    return steps


def _finite(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def _ms(x):
    return None if _finite(x) is None else round(1000 * x, 2)


def eager_headline(d: dict) -> dict:
    out = {"device": d.get("device"), "settings": {k: d["settings"].get(k) for k in ("batch", "crop", "eval_size", "reps")}}
    for arch, e in d.get("archs", {}).items():
        v = e.get("variants", {})
        train = lambda n: v.get(n, {}).get("train", {})
        row = {f"{n}_step_ms": _ms(train(n).get("step_s")) for n in ("baseline", "dropclass", "dropclass_reference")}
        row.update({f"{n}_peak_gib": train(n).get("peak_gib") for n in ("baseline", "dropclass", "dropclass_reference")})
        row["errors"] = {n: train(n)["error"] for n in v if "error" in train(n)}
        row["eval_images_per_s"] = {n: v[n].get("eval", {}).get("images_per_s") for n in v}
        row["ratios"], row["targets_met"] = e.get("ratios", {}), e.get("targets_met", {})
        row["dropclass_schedule_hours_1_gpu"] = train("dropclass").get("schedule_hours_1_gpu")
        row["dropclass_schedule_hours_4_gpus_ideal"] = train("dropclass").get("schedule_hours_4_gpus_ideal")
        row["schedule_includes_eval"] = train("dropclass").get("schedule_includes_eval")
        out[arch] = row
    pr = d.get("profile")
    if pr: out["profile"] = pr if "error" in pr else {
        "arch": pr["arch"], "clock": pr["clock"], "baseline_ms": round(pr["baseline_total_ms"], 3),
        "dropclass_ms": round(pr["dropclass_total_ms"], 3), "extra_ms": round(pr["extra_ms"], 3), "ratio": round(pr["ratio"], 4),
        "top_extra_ops": [f"{r['op']} +{r['extra_ms']} ms" for r in pr["top_extra_ops"][:5]]}
    return out


def compile_headline(d: dict, eager: dict | None) -> dict:
    out = {}
    for arch, e in d.get("archs", {}).items():
        out[arch] = {}
        for n, r in e.get("variants", {}).items():
            t = r.get("train", {})
            if "error" in t: out[arch][n] = {"error": t["error"]}; continue
            base = (eager or {}).get("archs", {}).get(arch, {}).get("variants", {}).get(n, {}).get("train", {}).get("step_s")
            out[arch][n] = {"step_ms": _ms(t.get("step_s")), "first_step_s": t.get("first_step_s"),
                            "unique_graphs": t.get("unique_graphs"), "graph_breaks": t.get("graph_breaks"), "peak_gib": t.get("peak_gib"),
                            "speedup_vs_eager": base / t["step_s"] if base and t.get("step_s") else None}
        out[arch]["ratios"] = e.get("ratios", {})
    return out


def train_headline(d: dict) -> dict:
    ls, tm = d.get("loss_summary", {}), d.get("timing", {})
    return {"preset": d.get("preset"), "error": d.get("error"), "iterations": d.get("iterations"),
            "stopped_early": d.get("stopped_early"), "loss_first": ls.get("first_window_total"),
            "loss_last": ls.get("last_window_total"), "ce_first": ls.get("first_window_ce"), "ce_last": ls.get("last_window_ce"),
            "ce_falls": ls.get("ce_falls"), "loss_finite": ls.get("finite"), "loader_step_ms": _ms(tm.get("loader_step_s")),
            "preloaded_step_ms": _ms(tm.get("preloaded_step_s")), "gpu_busy_fraction": tm.get("gpu_busy_fraction"),
            "loader_keeps_up": tm.get("loader_keeps_up"), "gpu_images_per_s": tm.get("gpu_images_per_s"),
            "loader_images_per_s": {str(l["workers"]): l["images_per_s"] for l in tm.get("loader_alone", [])},
            "peak_gib": d.get("peak_gib")}


def compare_headline(d: dict) -> dict:
    out = {"preset": d.get("preset"), "seeds": d.get("seeds"), "overrides": d.get("overrides"), "wall_seconds": d.get("wall_seconds")}
    for split, readings in d.get("summary", {}).items():
        for reading, rows in readings.items():
            for metric in ("miou", "miou_dagger"):
                r = rows.get(metric, {})
                out[f"{split}/{reading}/{metric}"] = {"baseline": r.get("baseline", {}).get("mean"), "dropclass": r.get("other", {}).get("mean"),
                                                      "delta": r.get("mean"), "ci95": r.get("ci95"), "wins": r.get("wins"), "n": r.get("n")}
    return out


def main(argv=None) -> int:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(description=doc[0], epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, required=True, help="the folder the steps wrote their JSON files to")
    p.add_argument("--steps", type=Path, default=None, help="the steps' status file written by gpu_run.sh")
    p.add_argument("--device", default="cuda", help="the device the session ran on (cuda, cuda:<index> or cpu)")
    p.add_argument("--tiny", action="store_true", help="the session was a dry run with tiny sizes")
    p.add_argument("--time-scale", type=float, default=None, help="the factor the session's time limits were multiplied by")
    p.add_argument("--budget", type=int, default=None, help="the session's budget in seconds (after the time scale)")
    args = p.parse_args(argv)
    if not args.dir.is_dir(): p.error(f"--dir {args.dir} is not a folder")
    try:
        import torch
        versions = {"torch": torch.__version__, "cuda": torch.version.cuda}
    except Exception as e:
        versions = {"torch": f"not importable ({e})"}
    summary = {"device": device_name(args.device), "device_arg": args.device, "tiny": args.tiny, "time_scale": args.time_scale,
               "budget_s": args.budget, **versions,
               "python": platform.python_version(), "steps": read_steps(args.steps), "files": {}, "headline": {}}
    loaded = {}
    for step, name in FILES.items():
        path = args.dir / name
        if not path.is_file():
            summary["files"][name] = "missing"
            continue
        try:
            loaded[step] = json.loads(path.read_text())
            summary["files"][name] = "ok"
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            summary["files"][name] = f"unreadable: {e}"
    makers = {"bench_gpu": lambda d: eager_headline(d), "bench_gpu_compile": lambda d: compile_headline(d, loaded.get("bench_gpu")),
              "bench_gpu_train": train_headline, "compare_seeds": compare_headline}
    for step, make in makers.items():
        if step not in loaded: continue
        try: summary["headline"][step] = make(loaded[step])
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            summary["headline"][step] = {"error": f"{type(e).__name__}: {e}"}
    summary["all_ok"] = bool(summary["steps"]) and all(s["status"] == "ok" for s in summary["steps"].values()) \
        and all(v == "ok" for v in summary["files"].values())
    path = args.dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"device: {summary['device']}")
    for name, s in summary["steps"].items():
        print(f"  {name:22s} {s['status']:8s} {s['seconds']} s" + (f" of {s['limit_s']} s" if s["limit_s"] is not None else ""))
    for name, state in summary["files"].items():
        if state != "ok": print(f"  {name}: {state}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
