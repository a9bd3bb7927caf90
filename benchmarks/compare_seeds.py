"""Baseline against DropClass over several seeds: mean and spread per class and for mIoU and mIoU-dagger.

Runs the demo comparison (`dropclass demo`: the same preset for both methods, differing only in `method`) once per seed,
resuming runs already finished, then reports for each split the per-class IoU of both models as mean +- standard
deviation over the seeds, the mean difference and how many seeds DropClass wins. One seed is one sample; this is the
number the README quotes, whichever way it goes.

    python benchmarks/compare_seeds.py --seeds 0 1 2                 # about 9 minutes per seed on two CPU cores
    python benchmarks/compare_seeds.py --seeds 0 1 2 --quick         # the pipeline only, for checking the script
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _stats(values):
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals: return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def summarise(per_seed: dict[int, dict], labels) -> dict:
    "Per split: mean and spread of each model's per-class IoU, mIoU and mIoU-dagger, and of DropClass - baseline."
    splits = sorted(set.intersection(*(set(r["splits"]) for r in per_seed.values())))
    out = {}
    order = labels.by_share() if labels.pixel_share else list(range(labels.num_classes))
    for split in splits:
        rows = {}
        for metric in ["miou", "miou_dagger"] + [labels.classes[c] for c in order]:
            get = (lambda r, m: r[m]) if metric in ("miou", "miou_dagger") else (lambda r, m: r["iou"][labels.classes.index(m)])
            base = [get(per_seed[s]["splits"][split]["baseline"], metric) for s in per_seed]
            drop = [get(per_seed[s]["splits"][split]["dropclass"], metric) for s in per_seed]
            delta = [None if a is None or b is None else b - a for a, b in zip(base, drop)]
            rows[metric] = {"baseline": _stats(base), "dropclass": _stats(drop), "delta": _stats(delta),
                            "dropclass_wins": sum(d is not None and d > 0 for d in delta), "seeds": len(delta)}
        out[split] = rows
    return out


def to_markdown(summary: dict, seeds: list[int], rare: set[str]) -> str:
    pct = lambda s: "n/a" if s["mean"] is None else f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"
    lines = [f"# Baseline against DropClass over {len(seeds)} seeds ({', '.join(map(str, seeds))})", "",
             "IoU in %, mean ± standard deviation over the seeds; Δ = DropClass - baseline; wins = seeds where Δ > 0; "
             "† = the rarest half of the classes.", ""]
    for split, rows in summary.items():
        lines += [f"## {split} split", "", "| | baseline | DropClass | Δ | wins |", "|---|---|---|---|---|"]
        for name, r in rows.items():
            shown = {"miou": "**mIoU**", "miou_dagger": "**mIoU†**"}.get(name, name + ("†" if name in rare else ""))
            lines.append(f"| {shown} | {pct(r['baseline'])} | {pct(r['dropclass'])} | {pct(r['delta'])} | {r['dropclass_wins']}/{r['seeds']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="the demo-quick preset (checks the pipeline; not a result)")
    p.add_argument("--runs", type=Path, default=Path("runs/compare_seeds"), help="folder for the runs (resumable)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="setting for every run")
    p.add_argument("--out", type=Path, default=None, help="JSON result (default: benchmarks/results/compare_seeds[_quick].json)")
    args = p.parse_args(argv)
    from dropclass.data.labels import CITYSCAPES
    from dropclass.demo import run_demo
    per_seed = {}
    for seed in args.seeds:
        folder = args.runs / (f"quick_seed{seed}" if args.quick else f"seed{seed}")
        run_demo(folder, quick=args.quick, seed=seed, overrides=args.overrides)
        per_seed[seed] = json.loads((folder / "results.json").read_text())
    summary = summarise(per_seed, CITYSCAPES)
    out = args.out or RESULTS / ("compare_seeds_quick.json" if args.quick else "compare_seeds.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    config = next(iter(per_seed.values()))["config"]
    out.write_text(json.dumps({"seeds": args.seeds, "preset": "demo-quick" if args.quick else "demo", "overrides": args.overrides,
                               "config": config, "summary": summary,
                               "command": " ".join([Path(sys.executable).name] + sys.argv)}, indent=2) + "\n")
    md = to_markdown(summary, args.seeds, {CITYSCAPES.classes[c] for c in CITYSCAPES.rarest()})
    out.with_suffix(".md").write_text(md + "\n")
    print(md)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
