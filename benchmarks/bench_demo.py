"""Wall time of `dropclass demo` and `dropclass demo --quick`, end to end, from an empty folder.

Runs each command as a user would (a fresh output folder, so both models are trained, the class statistics counted,
both splits evaluated and the report written), and records the total wall time, the time of each phase read from the
runs' own logs (the time outside training: class statistics, evaluation, report), and whether the run met its targets (demo <= 10 minutes, --quick <= 2 minutes). Run it on an idle
machine: other work on the same cores slows it down.

    python benchmarks/bench_demo.py                      # both commands, about 12 minutes on two CPU cores
    python benchmarks/bench_demo.py --only quick
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TARGETS = {"quick": 120.0, "demo": 600.0}  # seconds


def _training_seconds(run: Path) -> float | None:
    "Time of the training loop, from the last logged entry of history.jsonl."
    path = run / "history.jsonl"
    if not path.is_file(): return None
    times = [json.loads(l).get("time") for l in path.read_text().splitlines() if l.strip()]
    times = [t for t in times if t is not None]
    return round(max(times), 1) if times else None


def cfg_jobs(out: Path) -> int:
    "How the demo trained its models: side by side when it wrote a config.json into each run (child processes)."
    return 2 if all((out / m / "config.json").is_file() for m in ("baseline", "dropclass")) else 1


def time_demo(kind: str, workdir: Path) -> dict:
    out = workdir / kind
    cmd = [sys.executable, "-m", "dropclass.cli", "demo", "--out", str(out), "--quiet"] + (["--quick"] if kind == "quick" else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0: raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    results = json.loads((out / "results.json").read_text())
    cfg = results["config"]
    train = {m: _training_seconds(out / m) for m in ("baseline", "dropclass")}
    return {"command": "dropclass demo" + (" --quick" if kind == "quick" else ""), "wall_seconds": round(wall, 1),
            "target_seconds": TARGETS[kind], "meets_target": wall <= TARGETS[kind], "training_seconds": train,
            "trainings": "side by side (two processes)" if cfg_jobs(out) > 1 else "one after the other",
            "other_seconds": round(wall - (max if cfg_jobs(out) > 1 else sum)(v for v in train.values() if v), 1),
            "preset": {k: cfg[k] for k in ("arch", "encoder", "encoder_weights", "crop_size", "batch_size", "max_iters",
                                           "train_length", "eval_length")},
            "val_miou": {m: round(100 * r["miou"], 1) for m, r in results["splits"]["val"].items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=("quick", "demo"), default=None)
    p.add_argument("--out", type=Path, default=RESULTS / "demo_time.json")
    p.add_argument("--keep", type=Path, default=None,
                   help="write the demos under this folder (<keep>/demo, <keep>/quick) and keep them; it must not hold them yet")
    args = p.parse_args(argv)
    from dropclass.machine import machine_info
    record = {"machine": machine_info(), "runs": {}}  # the demo's own trainings split the cores (see "trainings")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for kind in ([args.only] if args.only else ["quick", "demo"]):
            if (root / kind).exists(): p.error(f"{root / kind} exists: the timing must start from an empty folder")
            print(f"timing {kind} ...", flush=True)
            record["runs"][kind] = r = time_demo(kind, root)
            print(f"  {r['command']}: {r['wall_seconds']:.0f} s (target {r['target_seconds']:.0f} s), training "
                  f"{r['training_seconds']}, val mIoU {r['val_miou']}", flush=True)
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    old.setdefault("runs", {}).update(record["runs"])
    old["machine"] = record["machine"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(old, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
