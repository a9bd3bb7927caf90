"""Where the drop branch loses the rare classes: the numbers behind the explanation in nbs/22_demo.ipynb.

For every finished run folder given (baselines and DropClass runs, e.g. the single-factor runs of `dropclass ablate`
and the study's runs), reads metrics.json and the checkpoint and reports:

- val and counterfactual mIoU, mIoU-dagger and the rare classes' IoU; for DropClass also read through h(A);
- the drop-branch diagnostics (share of a dropped class's pixels still predicted as it; agreement of the two heads);
- `drop_dimming`: how much dropping a class dims the channels it relies on (1 = switched off, about 0.09 for random
  weights with 19 classes and 64 channels);
- how many training batches dropped each class (the expected number under the run's p schedule);
- how hard L_sup can press on a class: alpha times the class's pixel share in the training set is the most L_sup can
  be when the drop branch predicts the dropped class on every one of its pixels and nowhere else.

    python benchmarks/drop_branch_analysis.py runs/factors/seed0/* --out benchmarks/results/drop_branch_analysis.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def analyse(folder: Path) -> dict:
    import torch
    from dropclass.core import DropClass
    from dropclass.data.balance import ClassStats
    from dropclass.diagnostics import drop_dimming, read_diagnostics
    from dropclass.losses import DropSchedule
    from dropclass.build import dataset_for, labels_for
    from dropclass.checkpoints import load_model
    from dropclass.distributed import Dist
    from dropclass.train import evaluate_split, split_summary
    metrics = json.loads((folder / "metrics.json").read_text())
    model, cfg = load_model(folder / "last.pt")
    labels = labels_for(cfg)
    rare = [labels.classes[c] for c in labels.rarest()]
    pct = lambda v: None if v is None else round(100 * v, 2)
    read = lambda s: {"miou": pct(s["miou"]), "miou_dagger": pct(s["miou_dagger"]),
                      "rare_iou": {c: pct(s["iou"][labels.classes.index(c)]) for c in rare}}
    out = {"method": cfg.method, "config": {k: metrics["config"][k] for k in (
        "max_iters", "suppress", "ramp_end", "compensation_momentum", "compensation_init_std", "class_weights", "lr", "seed")},
        "splits": {s: read(v) for s, v in metrics["splits"].items()}}
    if not isinstance(model, DropClass): return out
    model.inference = "plain"
    out["plain_reading"] = {s: read(split_summary(evaluate_split(model, cfg, s, torch.device("cpu"), Dist()), labels))
                            for s in metrics["splits"]}
    d = read_diagnostics(metrics.get("diagnostics")) or {}
    out["diagnostics"] = {k: d.get(k) for k in ("still_predicted", "still_predicted_class_mean", "agreement")}
    out["still_predicted_when_dropped"] = {c: pct(d.get("still_predicted_per_class", {}).get(c)) for c in rare}
    out["recall_nothing_dropped"] = {c: pct(d.get("recall_before", {}).get(c)) for c in rare}
    dim = drop_dimming(model)
    out["dimming"] = {"mean": round(float(dim.mean()), 4), **{c: round(float(dim[labels.classes.index(c)]), 4) for c in rare}}
    per_epoch = cfg.iters_per_epoch or max(min((len(dataset_for(cfg, cfg.train_split, length=cfg.train_length)) // cfg.batch_size),
                                               cfg.max_iters // 10), 1)
    sched = DropSchedule(cfg.max_iters, iters_per_epoch=per_epoch, by=cfg.ramp, lam_max=cfg.lam_max, p_max=cfg.p_max,
                         ramp_end=cfg.ramp_end)
    drops = sum(sched.p(i) for i in range(cfg.max_iters))
    out["batches_with_a_drop"] = round(drops, 1)
    out["drops_per_class"] = round(drops / labels.num_classes, 1)
    stats_file = folder / "class_stats.json"
    if stats_file.is_file():
        stats = ClassStats.from_json(stats_file.read_text())
        share = stats.counts.sum(0).double() / stats.counts.sum()
        out["lsup_ceiling"] = {c: round(cfg.alpha * float(share[labels.classes.index(c)]), 4) for c in rare}
        out["lsup_ceiling_mean_all_classes"] = round(cfg.alpha * float(share.mean()), 4)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="finished run folders (with metrics.json and last.pt)")
    p.add_argument("--out", type=Path, default=RESULTS / "drop_branch_analysis.json")
    args = p.parse_args(argv)
    from dropclass.machine import machine_info
    result = {"command": " ".join(["python", "benchmarks/drop_branch_analysis.py"] + (argv if argv is not None else sys.argv[1:])),
              "machine": machine_info(), "runs": {}}
    for folder in args.runs:
        if not (folder / "metrics.json").is_file():
            print(f"skipping {folder}: not finished", file=sys.stderr)
            continue
        key = f"{folder.parent.parent.name}/{folder.parent.name}/{folder.name}"
        result["runs"][key] = r = analyse(folder)
        print(f"{key}: val {r['splits']['val']['miou']}"
              + (f", h(A) {r['plain_reading']['val']['miou']}, still predicted {r['diagnostics']['still_predicted']}, "
                 f"dimming {r['dimming']['mean']}, drops per class {r['drops_per_class']}" if "dimming" in r else ""), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
