"""Write the synthetic street scenes to disk in the Cityscapes layout.

The train and val splits go to OUT (OUT/leftImg8bit/<split>/..., OUT/gtFine/<split>/...); the counterfactual split,
which Cityscapes has no name for, goes to OUT/counterfactual as its val split. Files are written atomically and
scenes already on disk are skipped, so an interrupted run continues where it stopped. Read the result with
dropclass.data.datasets.CityscapesSegmentation (or any Cityscapes tool).

    python -m data_tools.write_synthetic --out data/synthetic
    python -m data_tools.write_synthetic --out data/synthetic-1024 --size 512x1024 --splits train val
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_tools._cli import run, size


def parser() -> argparse.ArgumentParser:
    from dropclass.data.synthetic import DEFAULT_LENGTH, SPLITS
    p = argparse.ArgumentParser(prog="python -m data_tools.write_synthetic", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="dataset root to write")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS), help="splits to write (default: all)")
    p.add_argument("--length", type=int, default=None,
                   help=f"scenes per split (default: {', '.join(f'{k} {v}' for k, v in DEFAULT_LENGTH.items())})")
    p.add_argument("--size", type=size, default=(128, 256), help="image size HxW (default: 128x256)")
    p.add_argument("--seed", type=int, default=0, help="base seed; (seed, split, index) fixes a scene (default: 0)")
    p.add_argument("--colocation", type=float, default=None,
                   help="probability that an object obeys its co-location rule (default: 1, and 0 for the counterfactual split)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    from dropclass.data.synthetic import write_synthetic
    args = parser().parse_args(argv)
    for split in args.splits:
        root = args.out / "counterfactual" if split == "counterfactual" else args.out
        write_synthetic(root, split, length=args.length, size=args.size, seed=args.seed, colocation=args.colocation,
                        progress=not args.quiet)
        print(f"{split}: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
