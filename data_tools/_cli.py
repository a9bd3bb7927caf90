"""What every data tool shares: argument helpers and errors that end in a message, not a traceback."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence


def size(text: str) -> tuple[int, int]:
    "Parse an image size written HxW, e.g. 128x256."
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be written HxW, e.g. 128x256, got {text!r}") from None
    if h < 1 or w < 1: raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    "Run a tool's `main`; user errors (bad values, missing files) print one line on stderr and exit with status 2."
    try:
        return main(argv) or 0
    except (ValueError, FileNotFoundError, KeyError, ImportError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: files already written are complete; run the same command again to continue", file=sys.stderr)
        return 130


def add_dataset_args(p: argparse.ArgumentParser, split: str = "train") -> None:
    "The options that choose a dataset: --dataset, --root, --split, --length."
    p.add_argument("--dataset", default="synthetic", help="cityscapes, voc, synthetic or a registered name (default: synthetic)")
    p.add_argument("--root", default=None, help="dataset folder (not needed for generated datasets such as synthetic)")
    p.add_argument("--split", default=split, help=f"split to read (default: {split})")
    p.add_argument("--length", type=int, default=None,
                   help="number of samples: a generated dataset draws this many, a dataset of files uses its first ones")


def open_dataset(args: argparse.Namespace):
    "The dataset chosen by `add_dataset_args`' options, without transforms."
    from dropclass.data.datasets import dataset_info, open_dataset as _open
    if args.root is None and not dataset_info(args.dataset).generated:
        raise ValueError(f"--root is required for --dataset {args.dataset}: the folder that holds the dataset")
    return _open(args.dataset, args.root, args.split, length=args.length)
