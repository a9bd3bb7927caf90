"""How long the class-drop explorer takes to redraw, with one model and with two side by side, in one run.

Each update is timed from `ClassDropExplorer.set` to the last panel encoded (what a page waits for, less the transfer),
for the three changes a learner makes most: a new scene, a class dropped, a class inspected. The two views are timed
alternately on the same scenes, so the ratio (side by side / one model) is measured under the same load. The default
models are those of a finished `dropclass demo` in runs/demo; without them, the tiny preset's two models are trained
first (seconds; their figures are smaller, so the times are lower).

    python benchmarks/bench_explorer.py                       # runs/demo, 6 rounds
    python benchmarks/bench_explorer.py --baseline B.pt --dropclass D.pt --rounds 10
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _models(args) -> tuple[dict, str]:
    "name -> checkpoint, and where they came from."
    if args.baseline and args.dropclass: return {"DropClass": args.dropclass, "baseline": args.baseline}, "given"
    demo = Path("runs/demo")
    if all((demo / m / "last.pt").is_file() for m in ("baseline", "dropclass")):
        return {"DropClass": demo / "dropclass" / "last.pt", "baseline": demo / "baseline" / "last.pt"}, "runs/demo"
    from dropclass.config import config_from
    from dropclass.train import train
    root = Path(tempfile.mkdtemp())
    for m in ("baseline", "dropclass"):
        train(config_from("tiny", {"method": m, "out_dir": str(root / m), "eval_splits": (), "progress": False}))
    return {"DropClass": root / "dropclass" / "last.pt", "baseline": root / "baseline" / "last.pt"}, "tiny preset"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline")
    p.add_argument("--dropclass")
    p.add_argument("--rounds", type=int, default=6, help="updates of each kind per view (default 6)")
    p.add_argument("--out", type=Path, default=RESULTS / "explorer_updates.json")
    args = p.parse_args(argv)
    from dropclass.explorer import ClassDropExplorer
    from dropclass.machine import machine_info
    checkpoints, source = _models(args)
    ex = ClassDropExplorer.from_checkpoints(checkpoints, length=args.rounds + 2)
    classes = ("road", "vegetation", "car", "building", "sky", "sidewalk")
    changes = {  # round k -> the keyword arguments of `set` for that change
        "scene": lambda k: {"image": (k + 1) % len(ex.dataset)},
        "drop": lambda k: {"drop": classes[k % len(classes)]},
        "inspect": lambda k: {"inspect": classes[(k + 3) % len(classes)]},
    }
    views = {"one model": None, "side by side": "baseline"}
    seconds = {(v, c): [] for v in views for c in changes}
    for k in range(args.rounds):
        for change, kwargs in changes.items():
            for view, compare in views.items():  # alternately, under the same load
                ex.set(compare=compare, drop=None, inspect="person", image=k % len(ex.dataset))  # the same start for both
                t0 = time.perf_counter()
                ex.set(**kwargs(k))
                seconds[(view, change)].append(time.perf_counter() - t0)
                assert ex.error is None, ex.error
    median = {f"{v}/{c}": round(statistics.median(s), 3) for (v, c), s in seconds.items()}
    result = {
        "what": "seconds from ClassDropExplorer.set to the last panel encoded, median over rounds",
        "models": {n: str(p) for n, p in checkpoints.items()}, "models_from": source, "rounds": args.rounds,
        "image_size": list(ex.panels["image"].shape[:2]), "machine": machine_info(),
        "median_seconds": median,
        "ratio_side_by_side_to_one": {c: round(statistics.median(seconds[("side by side", c)])
                                            / statistics.median(seconds[("one model", c)]), 2) for c in changes},
        "all_seconds": {f"{v}/{c}": [round(x, 3) for x in s] for (v, c), s in seconds.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for key, value in median.items(): print(f"{key:24s} {value:.2f} s")
    print("side by side / one model:", result["ratio_side_by_side_to_one"], f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
