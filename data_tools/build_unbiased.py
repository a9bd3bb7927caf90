"""Build the unbiased test set I* (paper, Section 3.4) on disk.

For every class X (or those given with --classes), a copy of the validation split with X erased: its pixels filled
(inpainted from their surroundings by default, or a constant colour) and its labels set to 255. Each copy is a
Cityscapes-layout root OUT/<class>/ with a val split, readable with dropclass.data.datasets.CityscapesSegmentation.
Files are written atomically and finished samples are skipped, so an interrupted run continues where it stopped.

    python -m data_tools.build_unbiased --dataset cityscapes --root data/cityscapes --out data/cityscapes-unbiased
    python -m data_tools.build_unbiased --dataset synthetic --length 500 --classes rider motorcycle --out data/synthetic-unbiased
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_tools._cli import add_dataset_args, open_dataset, run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_tools.build_unbiased", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_args(p, split="val")
    p.add_argument("--out", type=Path, required=True, help="folder for I*: one Cityscapes-layout root per erased class")
    p.add_argument("--classes", nargs="+", default=None, help="class names or train ids to erase (default: every class)")
    p.add_argument("--fill", default="inpaint", help="how erased pixels are filled: inpaint or mean (default: inpaint)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers that erase and write (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    from dropclass.data.unbiased import write_unbiased
    args = parser().parse_args(argv)
    classes = [int(c) if c.isdigit() else c for c in args.classes] if args.classes else None
    roots = write_unbiased(open_dataset(args), args.out, classes=classes, fill=args.fill, progress=not args.quiet,
                           num_workers=args.workers)
    print(f"wrote {len(roots)} copies of the {args.split} split under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
