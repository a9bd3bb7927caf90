"""Count the pixels and images of every class of a dataset, and derive class weights.

Writes OUT (the per-image class counts, reloadable with dropclass.data.balance.ClassStats.from_json) and prints a
summary table: pixel share, image share, the rare half (the classes of mIoU-dagger), and the class weights of median
frequency balancing (the paper's text) and of HRNet's normalised 1/log weighting (the official code). With
--weights-out, the summary is also written as JSON for a training config.

    python -m data_tools.class_stats --dataset cityscapes --root data/cityscapes --split train --out stats.json
    python -m data_tools.class_stats --dataset synthetic --length 3000 --out synthetic_stats.json --weights-out weights.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data_tools._cli import add_dataset_args, open_dataset, run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_tools.class_stats", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_args(p)
    p.add_argument("--out", type=Path, required=True, help="JSON file for the per-image class counts")
    p.add_argument("--weights-out", type=Path, default=None, help="JSON file for shares, rare classes and class weights")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers that read masks (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    return p


def summary(stats, labels) -> dict:
    "Shares, rare classes and both weightings, keyed by class name."
    from dropclass.data.balance import hrnet_weights, median_frequency_weights
    names = list(labels.classes) if labels is not None else [str(c) for c in range(stats.num_classes)]
    med, hr = median_frequency_weights(stats), hrnet_weights(stats)
    return {"num_images": stats.num_images,
            "rare_classes": [names[c] for c in stats.rare_classes()],
            "classes": {n: {"pixel_share": float(stats.pixel_share[c]), "image_share": float(stats.image_share[c]),
                            "median_frequency_weight": float(med[c]), "hrnet_weight": float(hr[c])}
                        for c, n in enumerate(names)}}


def main(argv=None) -> int:
    from dropclass.data.balance import class_statistics
    from dropclass.data.io import atomic_write_bytes
    args = parser().parse_args(argv)
    ds = open_dataset(args)
    stats = class_statistics(ds, progress=not args.quiet, num_workers=args.workers)
    atomic_write_bytes(args.out, stats.to_json().encode())
    info = summary(stats, getattr(ds, "labels", None))
    if args.weights_out: atomic_write_bytes(args.weights_out, (json.dumps(info, indent=2) + "\n").encode())
    if not args.quiet:
        print(f"{stats.num_images} images; rare half: {', '.join(info['rare_classes'])}")
        print(f"{'class':16s} {'pixels %':>9s} {'images %':>9s} {'median-freq w':>14s} {'hrnet w':>8s}")
        for name, v in sorted(info["classes"].items(), key=lambda kv: kv[1]["pixel_share"]):
            print(f"{name:16s} {100 * v['pixel_share']:9.2f} {100 * v['image_share']:9.1f} "
                  f"{v['median_frequency_weight']:14.3f} {v['hrnet_weight']:8.3f}")
    print(f"wrote {args.out}" + (f" and {args.weights_out}" if args.weights_out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
