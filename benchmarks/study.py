"""Baseline against DropClass over several seeds, in a regime where the baseline has learned the task.

For every seed, trains the baseline and DropClass with one preset (the two runs differ only in `method`), resuming
whatever is already in the runs folder, then measures on the val split, the counterfactual split and I* (the val scenes
with each class's three most influential classes erased, chosen on that seed's baseline; Table 4):

- per class IoU, mIoU and mIoU-dagger of both models, mean and standard deviation over the seeds;
- the paired difference DropClass - baseline per seed, its mean and 95 % t interval, and on how many seeds DropClass wins;
- the same for DropClass read through h(A) (`inference="plain"`) instead of the drop branch;
- the drop-branch diagnostics of every DropClass run (suppression of a dropped class, agreement of the two heads).

Writes <out>.json and <out>.md. Runs resume, so the study can be stopped and restarted, and spread over sessions.

    python benchmarks/study.py --preset study --seeds 0 1 2 3 4 --jobs 2        # about 3 hours on two CPU cores
    python benchmarks/study.py --preset tiny --seeds 0 1 --bias-scenes 8          # the pipeline in a minute
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
METHODS = ("baseline", "dropclass")


def _train_command(preset: str, method: str, seed: int, folder: Path, overrides: list[str]) -> list[str]:
    sets = [*overrides, f"method={method}", f"seed={seed}", f"out_dir={folder}", "progress=false"]
    return [sys.executable, "-m", "dropclass.cli", "train", "--config", preset] + [a for s in sets for a in ("--set", s)]


def train_all(preset: str, seeds: list[int], runs: Path, overrides: list[str], jobs: int) -> dict:
    "Train (or resume, or skip when finished) every (seed, method) run, `jobs` at a time, each with cores/jobs threads."
    threads = max(1, (os.cpu_count() or 2) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    todo = [(s, m) for s in seeds for m in METHODS]

    def one(item):
        seed, method = item
        folder = runs / f"seed{seed}" / method
        if (folder / "metrics.json").is_file(): return item, 0.0
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with (folder / "train.log").open("a") as log:
            rc = subprocess.run(_train_command(preset, method, seed, folder, overrides), env=env, stdout=log, stderr=log).returncode
        if rc != 0: raise RuntimeError(f"training {folder} failed (exit code {rc}); see {folder / 'train.log'}")
        print(f"  trained seed {seed} {method} in {time.perf_counter() - t0:.0f} s", flush=True)
        return item, time.perf_counter() - t0

    with ThreadPoolExecutor(jobs) as pool: done = dict(pool.map(one, todo))
    return {f"seed{s}/{m}": round(t, 1) for (s, m), t in done.items()}


def plain_reading(folder: Path, splits: list[str]) -> dict:
    "The DropClass run of `folder` evaluated through h(A) instead of the drop branch (cached in plain.json)."
    import torch
    from dropclass.train import Dist, evaluate_split, labels_for, load_model, split_summary
    cache = folder / "plain.json"
    if cache.is_file(): return json.loads(cache.read_text())
    model, cfg = load_model(folder / "last.pt")
    model.inference = "plain"
    labels = labels_for(cfg)
    out = {s: split_summary(evaluate_split(model, cfg, s, torch.device("cpu"), Dist()), labels) for s in splits}
    cache.write_text(json.dumps(out, indent=2) + "\n")
    return out


def bias_benchmark(runs: Path, seeds: list[int], scenes: int) -> dict:
    "IoU on I and I* (Table 4) of every model of every seed, one erasure pass shared by all models (cached)."
    import numpy as np
    from dropclass.analysis.bias import influential_classes, iou_after_erasing, iou_drop, unbiased_iou
    from dropclass.metrics import miou
    from dropclass.train import _dataset, labels_for, load_model
    cache = runs / f"bias_{scenes}.json"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if all(f"seed{s}" in known for s in seeds): return known
    models, cfg = {}, None
    for s in seeds:
        base, cfg = load_model(runs / f"seed{s}" / "baseline" / "last.pt")
        drop, _ = load_model(runs / f"seed{s}" / "dropclass" / "last.pt")
        plain, _ = load_model(runs / f"seed{s}" / "dropclass" / "last.pt")
        plain.inference = "plain"
        models.update({f"seed{s}/baseline": base, f"seed{s}/dropclass": drop, f"seed{s}/dropclass_plain": plain})
    labels = labels_for(cfg)
    val = _dataset(cfg, cfg.val_split, scenes)
    res = iou_after_erasing(models, val, progress=True)
    out = {}
    for s in seeds:
        b = res[f"seed{s}/baseline"]
        top = influential_classes(iou_drop(b.iou, b.after), 3, b.erased)  # chosen on the baseline, reused for DropClass
        out[f"seed{s}"] = {}
        for name in ("baseline", "dropclass", "dropclass_plain"):
            r = res[f"seed{s}/{name}"]
            star = unbiased_iou(r.after, top, r.erased)
            iou = [None if np.isnan(v) else float(v) for v in star]
            out[f"seed{s}"][name] = {"miou": float(miou(star)), "miou_dagger": float(miou(star, labels.rarest())),
                                     "iou": iou, "miou_I": float(miou(r.iou))}
    cache.write_text(json.dumps(out, indent=2) + "\n")
    return out


def summarise(per_seed: dict, labels) -> dict:
    "Per split and reading: each model's mean and spread over seeds, and the paired difference with its 95 % interval."
    from dropclass.metrics import paired_difference
    order = labels.by_share()
    seeds = sorted(per_seed)
    out = {}
    for split in per_seed[seeds[0]]:
        out[split] = {}
        for reading in ("dropclass", "dropclass_plain"):
            rows = {}
            for metric in ["miou", "miou_dagger"] + [labels.classes[c] for c in order]:
                def get(r):
                    v = r[metric] if metric in ("miou", "miou_dagger") else r["iou"][labels.classes.index(metric)]
                    return None if v is None else 100 * v
                rows[metric] = paired_difference([get(per_seed[s][split]["baseline"]) for s in seeds],
                                                 [get(per_seed[s][split][reading]) for s in seeds])
            out[split][reading] = rows
    return out


def _fmt(x, d=1): return "n/a" if x is None else f"{x:.{d}f}"


def to_markdown(summary: dict, per_seed: dict, diagnostics: dict, meta: dict, labels) -> str:
    rare = {labels.classes[c] for c in labels.rarest()}
    seeds = sorted(per_seed)
    lines = [f"# Baseline against DropClass over {len(seeds)} seeds", "",
             f"Preset `{meta['preset']}`{' with ' + ', '.join(meta['overrides']) if meta['overrides'] else ''}; "
             f"seeds {', '.join(str(s) for s in seeds)}. Command: `{meta['command']}`.", "",
             "IoU in %. Each model: mean ± standard deviation over the seeds. Δ: the paired difference DropClass - baseline, "
             "mean over seeds with its 95 % t interval; wins: seeds where Δ > 0. † the rarest half of the classes. "
             "\"drop branch\" is DropClass as the official code predicts; \"h(A)\" is the same weights read through the "
             "model's own classifier.", ""]
    names = {"val": "val", "counterfactual": "counterfactual (every co-location rule broken)",
             "I*": f"I* (val scenes without each class's three most influential classes, {meta['bias_scenes']} scenes)"}
    for split, readings in summary.items():
        lines += [f"## {names.get(split, split)}", "",
                  "| | baseline | DropClass (drop branch) | Δ [95 % interval] | wins | DropClass (h(A)) | Δ [95 % interval] | wins |",
                  "|---|---|---|---|---|---|---|---|"]
        for metric in readings["dropclass"]:
            a, b = readings["dropclass"][metric], readings["dropclass_plain"][metric]
            ms = lambda s: f"{_fmt(s['mean'])} ± {_fmt(s['std'])}"
            ci = lambda r: f"{_fmt(r['mean'])} [{_fmt(r['ci95'][0])}, {_fmt(r['ci95'][1])}]" if r["ci95"] else _fmt(r["mean"])
            shown = {"miou": "**mIoU**", "miou_dagger": "**mIoU†**"}.get(metric, metric + ("†" if metric in rare else ""))
            lines.append(f"| {shown} | {ms(a['baseline'])} | {ms(a['other'])} | {ci(a)} | {a['wins']}/{a['n']} | "
                         f"{ms(b['other'])} | {ci(b)} | {b['wins']}/{b['n']} |")
        lines.append("")
    lines += ["## Drop-branch diagnostics (val, DropClass runs)", "",
              "Suppression: share of a class's pixels still predicted as that class when it is dropped (0 = fully "
              "suppressed). Agreement: share of pixels where h(A) and the drop branch with nothing dropped agree.", "",
              "| seed | suppression (pixels) | suppression (mean over classes) | agreement |", "|---|---|---|---|"]
    for s in seeds:
        dg = diagnostics.get(s)
        if dg: lines.append(f"| {s} | {100 * dg['suppression_rate']:.1f} % | {100 * dg['suppression_mean']:.1f} % | {100 * dg['agreement']:.1f} % |")
    lines += ["", "## Per seed (mIoU %)", "", "| seed | split | baseline | DropClass (drop branch) | DropClass (h(A)) |", "|---|---|---|---|---|"]
    for s in seeds:
        for split, r in per_seed[s].items():
            lines.append(f"| {s} | {split} | {100 * r['baseline']['miou']:.1f} | {100 * r['dropclass']['miou']:.1f} | "
                         f"{100 * r['dropclass_plain']['miou']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="study", help="training preset of every run (default: study)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--jobs", type=int, default=1, help="trainings at a time (each gets cores/jobs threads)")
    p.add_argument("--runs", type=Path, default=None, help="folder for the runs (default: runs/study_<preset>); resumable")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="setting for every run")
    p.add_argument("--bias-scenes", type=int, default=100, help="val scenes of the I/I* benchmark (0: skip it)")
    p.add_argument("--out", type=Path, default=None, help="output stem (default: benchmarks/results/study_<preset>)")
    args = p.parse_args(argv)
    if len(args.seeds) < 2: p.error("a comparison needs at least two seeds (five or more to report)")
    from dropclass.train import config_from, labels_for
    config_from(args.preset, args.overrides)  # fail early on a bad preset or setting
    runs = args.runs or Path("runs") / f"study_{args.preset}"
    print(f"training {len(args.seeds)} seeds x {len(METHODS)} methods of preset {args.preset} in {runs} ({args.jobs} at a time)", flush=True)
    t0 = time.perf_counter()
    times = train_all(args.preset, args.seeds, runs, args.overrides, args.jobs)
    per_seed, diagnostics, cfg = {}, {}, None
    for s in args.seeds:
        m = {meth: json.loads((runs / f"seed{s}" / meth / "metrics.json").read_text()) for meth in METHODS}
        cfg = m["baseline"]["config"]
        splits = list(m["baseline"]["splits"])
        plain = plain_reading(runs / f"seed{s}" / "dropclass", splits)
        per_seed[s] = {sp: {"baseline": m["baseline"]["splits"][sp], "dropclass": m["dropclass"]["splits"][sp],
                            "dropclass_plain": plain[sp]} for sp in splits}
        diagnostics[s] = m["dropclass"].get("diagnostics")
    if args.bias_scenes > 0:
        bias = bias_benchmark(runs, args.seeds, args.bias_scenes)
        for s in args.seeds: per_seed[s]["I*"] = bias[f"seed{s}"]
    labels = labels_for(config_from(None, {k: v for k, v in cfg.items() if k != "method"}))
    summary = summarise(per_seed, labels)
    stem = args.out or RESULTS / f"study_{args.preset}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {"preset": args.preset, "overrides": args.overrides, "seeds": args.seeds, "bias_scenes": args.bias_scenes,
            "command": " ".join(["python", "benchmarks/study.py"] + (argv if argv is not None else sys.argv[1:]))}
    result = {**meta, "config": cfg, "summary": summary, "per_seed": per_seed, "diagnostics": diagnostics,
              "train_seconds": times, "wall_seconds": round(time.perf_counter() - t0, 1)}
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = to_markdown(summary, per_seed, diagnostics, meta, labels)
    stem.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
