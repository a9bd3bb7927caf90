"""The head probe (notebook 27) on a trained DropClass run: how the suppression of a dropped class grows with the number of
drops per class when only the head trains on frozen features, under the official setting and single factors.

The features A of the run's model are computed once, in eval mode with eval transforms, for the first --train-scenes
training scenes and the first --val-scenes val scenes. Each variant then trains a copy of the head (the classifier and
the compensating layer) with a class dropped in every batch (Eq. 9, lambda fixed, AdamW) and is measured at every
checkpoint of --drops (drops per class): the share of a dropped class's pixels still predicted (all pixels, mean over
classes, mean over the rare classes, and relative to the drop branch's recall with nothing dropped), drop_dimming, and
the pixel accuracy of the drop branch and of h(A) with nothing dropped. The JSON is rewritten after every variant, so a
stopped run keeps what it measured; a variant already in the JSON with the same settings is not run again, and the
variants of earlier runs on the same features are kept (so the single factors can be run to fewer drops than the
official setting, in a second call).

Variants: official (BatchNorm on batch statistics, z among all classes, the model's Eq. 4 average, lr 1e-3),
frozen_bn (the compensation BatchNorm frozen at its running statistics), group_norm, no_norm, z_present (z among the
classes present in the batch), average_all (Eq. 4 over |C|), lr_3e-3, lr_3e-4.

    python benchmarks/probe.py --run runs/demo/dropclass                      # every variant, the default checkpoints
    python benchmarks/probe.py --run RUN --variants official --drops 0 42 168 337 --out probe.json
    python benchmarks/probe.py --run RUN --variants frozen_bn z_present --drops 0 42 168 --out probe.json   # added to it
    python benchmarks/probe.py --run RUN --tiny                               # seconds: a check of the script itself
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

VARIANTS = {
    "official": {},
    "frozen_bn": {"norm": "frozen"},
    "group_norm": {"norm": "group"},
    "no_norm": {"norm": "none"},
    "z_present": {"draw": "present"},
    "average_all": {"average": "all"},
    "lr_3e-3": {"lr": 3e-3},
    "lr_3e-4": {"lr": 3e-4},
}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(description=doc[0], epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a DropClass run folder (its last.pt) or a checkpoint file")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT",
                   help=f"default: all of {' '.join(VARIANTS)}")
    p.add_argument("--drops", nargs="+", type=int, default=[0, 42, 168, 337], help="checkpoints in drops per class (default 0 42 168 337)")
    p.add_argument("--train-scenes", type=int, default=300, help="training scenes whose features the head trains on (default 300)")
    p.add_argument("--val-scenes", type=int, default=40, help="val scenes it is measured on (default 40)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--class-weights", choices=("run", "none"), default="run",
                   help="the cross-entropies' class weights: the run's own (default) or none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="8 training and 4 val scenes, checkpoints 0 and 1: checks the script")
    p.add_argument("--out", type=Path, default=None, help="JSON to write (default benchmarks/results/probe_<run name>.json)")
    p.add_argument("--figure", type=Path, default=None, help="PNG of the curves (default: beside the JSON)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.tiny: args.train_scenes, args.val_scenes, args.drops = 8, 4, [0, 1]
    if min(args.train_scenes, args.val_scenes, args.batch_size) < 1: p.error("--train-scenes, --val-scenes and --batch-size must be >= 1")
    ckpt = args.run / "last.pt" if args.run.is_dir() else args.run
    if not ckpt.is_file(): p.error(f"no checkpoint at {ckpt}: give a run folder with last.pt (e.g. runs/demo/dropclass) or a .pt file")

    import torch
    from dropclass.core import DropClass
    from dropclass.machine import machine_info
    from dropclass.data.transforms import eval_transforms
    from dropclass.metrics import rare_classes
    from dropclass.probe import ProbeSettings, frozen_features, probe_drops, probe_figure
    from dropclass.build import class_weights_for, dataset_for, labels_for, training_stats
    from dropclass.checkpoints import load_model
    from dropclass.distributed import Dist

    torch.manual_seed(args.seed)
    model, cfg = load_model(ckpt)
    if not isinstance(model, DropClass): p.error(f"{ckpt} is a {cfg.method} model; the probe needs a DropClass run")
    out = args.out or Path(__file__).parent / "results" / f"probe_{ckpt.parent.name}{'_tiny' if args.tiny else ''}.json"
    fig_path = args.figure or out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)

    weight = None
    if args.class_weights == "run" and cfg.class_weights != "none":
        train_full = dataset_for(cfg, cfg.train_split, length=cfg.train_length)
        # the run's class_stats.json when there
        weight = class_weights_for(cfg, training_stats(cfg, train_full, ckpt.parent, Dist()))
    labels = labels_for(cfg)
    rare = rare_classes(labels) if labels.pixel_share else None
    t0 = time.perf_counter()
    train = frozen_features(model, dataset_for(cfg, cfg.train_split, eval_transforms(), args.train_scenes), args.batch_size,
                            labels.ignore_index, progress=not args.quiet)
    val = frozen_features(model, dataset_for(cfg, cfg.val_split, eval_transforms(), args.val_scenes), args.batch_size,
                          labels.ignore_index, progress=not args.quiet)
    features_s = time.perf_counter() - t0

    previous = json.loads(out.read_text()) if out.is_file() else {}
    doc = {"run": str(ckpt), "model": {"arch": cfg.arch, "encoder": cfg.encoder, "max_iters": cfg.max_iters, "seed": cfg.seed,
                                       "compensation_norm": cfg.dropclass.compensation_norm, "average": cfg.dropclass.average},
           "classes": list(labels.classes), "rare": rare if rare is not None else "rarer half by training pixel counts",
           "train_scenes": len(train), "val_scenes": len(val), "class_weights": None if weight is None else [round(float(w), 5) for w in weight],
           "features_seconds": round(features_s, 1), "machine": machine_info(), "tiny": args.tiny,
           "commands": [], "variants": {}}
    doc["checkpoint_mtime_ns"] = ckpt.stat().st_mtime_ns  # a run trained again at the same path is not the same model
    same_data = all(previous.get(k) == doc[k] for k in ("run", "checkpoint_mtime_ns", "model", "train_scenes", "val_scenes",
                                                         "class_weights"))
    if same_data: doc["variants"], doc["commands"] = (dict(previous.get("variants", {})),
                                                list(previous.get("commands", [previous["command"]] if "command" in previous else [])))
    command = " ".join(["python", "benchmarks/probe.py", *(sys.argv[1:] if argv is None else argv)])
    if command not in doc["commands"]: doc["commands"].append(command)
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.compensate)
    for name in args.variants:
        if VARIANTS[name].get("norm") == "frozen" and not has_bn:
            print(f"{name}: skipped, the model's compensating layer has no BatchNorm to freeze ({cfg.dropclass.compensation_norm})")
            continue
        settings = ProbeSettings(drops=tuple(args.drops), batch_size=args.batch_size, seed=args.seed, **VARIANTS[name])
        old = doc["variants"].get(name)
        if old is not None and old.get("settings") == json.loads(json.dumps(vars(settings))):
            doc["variants"][name] = old
            print(f"{name}: already measured with these settings ({out})")
            continue
        t = time.perf_counter()
        res = probe_drops(model, train, val, settings, weight=weight, rare=rare, progress=not args.quiet)
        res["seconds"] = round(time.perf_counter() - t, 1)
        doc["variants"][name] = res
        _atomic_write(out, json.dumps(doc, indent=1) + "\n")
        print(f"{name} ({res['seconds']:.0f} s): " + "; ".join(
            f"{r['drops_per_class']:g} drops: still {100 * r['still_predicted']:.1f} % (rare "
            f"{100 * (r['still_predicted_rare_mean'] or 0):.1f} %), dimming {r['dimming']:.3f}, drop/h(A) accuracy "
            f"{100 * r['accuracy_drop']:.1f}/{100 * r['accuracy_plain']:.1f}" for r in res["rows"]), flush=True)
    _atomic_write(out, json.dumps(doc, indent=1) + "\n")
    fig = probe_figure(doc["variants"], f"head probe on {ckpt.parent.name} ({cfg.arch}, {cfg.max_iters} iterations): "
                                        f"{len(train)} training and {len(val)} val scenes")
    fig.savefig(fig_path, dpi=110)
    print(f"wrote {out} and {fig_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
