"""Dose response in full training: how far a dropped class is suppressed after about D drops per class, with the
backbone trained too, each DropClass run beside a baseline trained as long with the same settings.

For every dose D the run length is chosen so that the schedule drops each class about D times: with a class drawn
among all |C| classes in a batch with probability p(it), a class is dropped sum_it p(it) / |C| times in expectation
(computed from the run's own DropSchedule and written to the JSON). The default recipe is the `study` preset at
64x128 (a quarter of its pixels, so runs four times as long fit) with the ramps stepped every iteration and ending at
a tenth of the run (`ramp=iter ramp_end=0.1`), so that almost every batch drops a class; with the official ramps
(stepped per epoch, ending at the last iteration) p averages 0.5 and the same dose would take twice the iterations.

Per dose and model: val and counterfactual mIoU and mIoU†, I* (Table 4), DropClass read through both branches, and
the drop-branch diagnostics of the DropClass run (share of a dropped class's pixels still predicted: over all pixels,
mean over classes, mean over the rare classes, relative to the recall with nothing dropped; drop_dimming; pixel
accuracy of the drop branch and of h(A) with nothing dropped). The JSON is rewritten after every dose; the runs
resume, so the script can be stopped and started again with the same arguments; the results of finished runs (not
their weights) are kept with the JSON, so a finished dose is read, not trained again, on another clone.

    python benchmarks/dose_response.py --doses 40 170 340          # about an hour and a half on two CPU cores
    python benchmarks/dose_response.py --doses 2 --preset tiny --set crop_size=32x64 --runs /tmp/dose --tiny   # a check

A variant of DropClass is compared with the same baselines: `--dropclass-set KEY=VALUE` changes the DropClass runs
only, and `--baseline-runs` names the folder whose finished baseline of each dose is linked in (not trained again):

    python benchmarks/dose_response.py --doses 340 --dropclass-set compensation_norm=group --baseline-runs \
        benchmarks/results/dose_runs --runs benchmarks/results/dose_runs_group --out benchmarks/results/dose_response_group.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
RECIPE = ["crop_size=64x128", "ramp=iter", "ramp_end=0.1"]


def expected_drops(cfg) -> float:
    "Expected drops per class of a run: the sum of the schedule's p over its iterations, over the number of classes."
    from dropclass.losses import DropSchedule
    from dropclass.build import labels_for
    # the training loop's epoch length when the preset gives none (it matters only for ramp="epoch")
    per_epoch = cfg.iters_per_epoch or max(min((cfg.train_length or 0) // cfg.batch_size, cfg.max_iters // 10), 1)
    sched = DropSchedule(cfg.max_iters, iters_per_epoch=per_epoch, by=cfg.ramp, lam_max=cfg.lam_max,
                         p_max=cfg.p_max, ramp_end=cfg.ramp_end)
    return sum(sched.p(it) for it in range(cfg.max_iters)) / labels_for(cfg).num_classes


def iters_for(dose: float, preset: str, overrides: list[str]) -> int:
    "The shortest run length (a multiple of 10 iterations) whose schedule drops each class at least `dose` times."
    from dropclass.config import config_from
    per = lambda n: expected_drops(config_from(preset, [*overrides, f"max_iters={n}"]))
    lo, hi = 10, 10
    while per(hi) < dose: lo, hi = hi, hi * 2
    while hi - lo > 10:
        mid = (lo + hi) // 20 * 10
        lo, hi = (mid, hi) if per(mid) < dose else (lo, mid)
    return hi


def _train_seconds(run: Path) -> float | None:
    "Seconds the training loop of a finished run took (the last time its history logged; evaluations included)."
    times = [e["time"] for e in map(json.loads, (run / "history.jsonl").read_text().splitlines()) if "time" in e] \
        if (run / "history.jsonl").is_file() else []
    return round(times[-1], 1) if times else None


def summarise(metrics: dict, plain: dict, bias: dict | None, rare: list[str], classes: list[str]) -> dict:
    "The numbers of one dose: each model's mIoU and mIoU† per split, and the DropClass run's diagnostics."
    from dropclass.diagnostics import read_diagnostics
    row = {}
    for split in metrics["baseline"]["splits"]:
        row[split] = {name: {k: round(100 * r[k], 2) for k in ("miou", "miou_dagger")}
                      for name, r in (("baseline", metrics["baseline"]["splits"][split]),
                                      ("dropclass", metrics["dropclass"]["splits"][split]), ("dropclass_plain", plain[split]))}
    if bias is not None:
        row["I*"] = {name: {k: round(100 * bias[name][k], 2) for k in ("miou", "miou_dagger")}
                     for name in ("baseline", "dropclass", "dropclass_plain")}
    d = read_diagnostics(metrics["dropclass"].get("diagnostics")) or {}
    per = d.get("still_predicted_per_class", {})
    recall = d.get("recall_before", {})
    rare_vals = [per[c] for c in rare if per.get(c) is not None]
    # relative to the recall with nothing dropped, over the rare classes that the drop branch predicts at all
    rare_rel = [per[c] / recall[c] for c in rare if per.get(c) is not None and (recall.get(c) or 0) > 0]
    row["diagnostics"] = {"still_predicted": d.get("still_predicted"), "still_predicted_class_mean": d.get("still_predicted_class_mean"),
                          "still_predicted_rare_mean": round(sum(rare_vals) / len(rare_vals), 5) if rare_vals else None,
                          "still_predicted_relative": d.get("still_predicted_relative"),
                          "still_predicted_rare_relative": round(sum(rare_rel) / len(rare_rel), 5) if rare_rel else None,
                          "rare_predicted": len(rare_rel), "accuracy_drop": d.get("accuracy_drop"),
                          "accuracy_plain": d.get("accuracy_plain"), "agreement": d.get("agreement"),
                          "per_class": per, "recall_before": recall, "scenes": d.get("scenes")}
    val = metrics["baseline"]["config"]["val_split"]
    for name in ("baseline", "dropclass"):
        row[f"val_iou_{name}"] = {c: None if v is None else round(100 * v, 2) for c, v in zip(classes, metrics[name]["splits"][val]["iou"])}
    return row


def main(argv=None) -> int:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(description=doc[0], epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--doses", nargs="+", type=float, default=[40, 170, 340], help="drops per class (default 40 170 340)")
    p.add_argument("--preset", default="study", help="training preset (default: study)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"settings of every run, after the recipe {' '.join(RECIPE)}")
    p.add_argument("--dropclass-set", dest="dropclass_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="settings of the DropClass runs only (a variant such as compensation_norm=group); the baseline of a "
                        "dose is then the one of --baseline-runs")
    p.add_argument("--baseline-runs", type=Path, default=None,
                   help="folder whose baselines the DropClass variant is compared with (default: --runs); each dose's "
                        "baseline is linked into --runs, so that one baseline serves every variant")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=None, help="trainings at a time (default: two on a multi-core CPU)")
    p.add_argument("--runs", type=Path, default=RESULTS / "dose_runs",
                   help="folder of the runs (resumable; default benchmarks/results/dose_runs, where git keeps the results of "
                        "finished runs but not their weights, so that a finished dose is not trained again)")
    p.add_argument("--bias-scenes", type=int, default=100, help="val scenes of the I* measurement (0: skip it)")
    p.add_argument("--out", type=Path, default=RESULTS / "dose_response.json")
    p.add_argument("--tiny", action="store_true", help="no I* and short evaluations: a check of the script")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if any(d <= 0 for d in args.doses): p.error("--doses must be positive numbers of drops per class")

    from dropclass.data.io import atomic_write_bytes
    from dropclass.experiments import _bias, default_jobs, evaluate_run, train_runs
    from dropclass.machine import machine_info
    from dropclass.build import labels_for
    from dropclass.config import config_from

    overrides = [*RECIPE, *args.overrides]
    # a bad preset or setting fails before anything trains
    config_from(args.preset, [*overrides, *args.dropclass_overrides])
    out = json.loads(args.out.read_text()) if args.out.is_file() else {}
    out.update({"preset": args.preset, "recipe": overrides, "dropclass_only": args.dropclass_overrides, "seed": args.seed, "command": " ".join(["python benchmarks/dose_response.py", *(argv or sys.argv[1:])]),
                "machine": {**machine_info(threads=max(1, (os.cpu_count() or 2) // (args.jobs or default_jobs()))),
                            "trainings_at_a_time": args.jobs or default_jobs()}})
    out.setdefault("doses", {})
    for dose in args.doses:
        iters = iters_for(dose, args.preset, overrides)
        runs = args.runs / f"iters{iters}"
        common = [*overrides, f"max_iters={iters}", f"seed={args.seed}", f"progress={not args.quiet}",
                  f"eval_every={max(iters // 4, 1)}", f"ckpt_every={max(iters // 10, 1)}"]
        if args.tiny: common += ["eval_length=4", "diag_length=4"]
        if args.baseline_runs is not None and args.baseline_runs.resolve() != args.runs.resolve():
            link, target = runs / f"seed{args.seed}" / "baseline", args.baseline_runs / f"iters{iters}" / f"seed{args.seed}" / "baseline"
            if not (target / "metrics.json").is_file(): p.error(f"no finished baseline in {target}: run the dose without a variant first")
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)
        cfgs = {m: config_from(args.preset, [*common, f"method={m}", f"out_dir={runs / f'seed{args.seed}' / m}",
                                             *(args.dropclass_overrides if m == "dropclass" else [])])
                for m in ("baseline", "dropclass")}
        drops = expected_drops(cfgs["dropclass"])
        print(f"dose {dose:g}: {iters} iterations, {drops:.1f} expected drops per class, runs in {runs}", flush=True)
        t0 = time.perf_counter()
        metrics = train_runs(cfgs, args.jobs, not args.quiet)
        splits = list(metrics["baseline"]["splits"])
        plain = evaluate_run(runs / f"seed{args.seed}" / "dropclass" / "last.pt", splits, inference="plain",
                             cache=runs / f"seed{args.seed}" / "dropclass" / "plain.json")
        bias = None
        if args.bias_scenes > 0 and not args.tiny:
            bias = _bias(runs, [args.seed], args.bias_scenes)[f"seed{args.seed}"]
        labels = labels_for(cfgs["baseline"])
        rare = [labels.classes[c] for c in labels.rarest()]  # the classes of mIoU†
        row = summarise(metrics, plain, bias, rare, list(labels.classes))
        row.update({"iters": iters, "drops_per_class": round(drops, 1), "rare_classes": rare,
                    "train_seconds": {m: _train_seconds(Path(c.out_dir)) for m, c in cfgs.items()},
                    "wall_seconds_this_call": round(time.perf_counter() - t0, 1), "config": metrics["dropclass"]["config"]})
        out["doses"][f"{dose:g}"] = row
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out, (json.dumps(out, indent=1) + "\n").encode())
        d = row["diagnostics"]
        val = row[cfgs["baseline"].val_split]
        print(f"dose {dose:g} ({iters} it): still predicted {d['still_predicted']}, rare {d['still_predicted_rare_mean']}, "
              f"drop/h(A) accuracy {d['accuracy_drop']}/{d['accuracy_plain']}; val mIoU baseline {val['baseline']['miou']}, "
              f"DropClass {val['dropclass']['miou']} (h(A) {val['dropclass_plain']['miou']})", flush=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
