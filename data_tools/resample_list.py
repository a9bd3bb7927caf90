"""Write a resampled training list: the dataset indices of one epoch, one per line.

Two ways to oversample rare classes, from the class counts written by data_tools.class_stats:
--repeat-class NAME --times K repeats every image that contains the class K times (the paper's Table 3, K = 2 for
motorcycle); --repeat-factor T is repeat-factor sampling, its generalisation (each image repeated by the largest
sqrt(T / f_c) of its classes, f_c the share of images containing class c, rounded at random per epoch).

    python -m data_tools.resample_list --stats stats.json --repeat-class motorcycle --times 2 --out train_motorcycle_x2.txt
    python -m data_tools.resample_list --stats stats.json --repeat-factor 0.1 --epoch 0 --out train_rfs.txt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_tools._cli import run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_tools.resample_list", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stats", type=Path, required=True, help="class counts written by data_tools.class_stats")
    p.add_argument("--out", type=Path, required=True, help="text file to write, one dataset index per line")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--repeat-class", help="name or train id of the class whose images are repeated")
    how.add_argument("--repeat-factor", type=float, help="threshold t of repeat-factor sampling, e.g. 0.1")
    p.add_argument("--times", type=int, default=2, help="with --repeat-class: copies of each image with the class (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="with --repeat-factor: seed of the random rounding (default: 0)")
    p.add_argument("--epoch", type=int, default=0, help="with --repeat-factor: which epoch's draw to write (default: 0)")
    return p


def main(argv=None) -> int:
    from dropclass.data.balance import (ClassStats, RepeatFactorSampler, repeat_class_indices, repeat_factors,
                                        write_index_list)
    args = parser().parse_args(argv)
    if not args.stats.is_file(): raise FileNotFoundError(f"no class counts at {args.stats}; write them with data_tools.class_stats")
    stats = ClassStats.from_json(args.stats.read_text())
    if args.repeat_class is not None:
        cls = int(args.repeat_class) if args.repeat_class.isdigit() else args.repeat_class
        indices = repeat_class_indices(stats, cls, args.times)
    else:
        sampler = RepeatFactorSampler(repeat_factors(stats, args.repeat_factor), seed=args.seed, shuffle=False)
        sampler.set_epoch(args.epoch)
        indices = sampler.indices().tolist()
    write_index_list(args.out, indices)
    print(f"wrote {len(indices)} indices ({stats.num_images} images) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
