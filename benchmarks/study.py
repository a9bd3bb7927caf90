"""Baseline against DropClass over several seeds, in a regime where the baseline has learned the task.

The study is the library's seed comparison, `dropclass compare` (`dropclass.experiments.compare_methods`): for every
seed it trains the baseline and DropClass with one preset (the two runs differ only in `method`), resuming whatever
is already in the runs folder, reads DropClass through both branches, measures I* (Table 4), and writes the paired
difference DropClass - baseline of every metric with its 95 % t interval. This script runs it with the results
written under benchmarks/results/.

    python benchmarks/study.py --preset study --seeds 0 1 2 3 4 --jobs 2 --runs runs/study     # about 3 hours on two CPU cores
    python benchmarks/study.py --preset tiny --seeds 0 1 --bias-scenes 8                        # the pipeline in a minute
"""
from __future__ import annotations

import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main(argv=None) -> int:
    "`dropclass compare` with the report written to benchmarks/results/study_<preset>.{json,md} unless --out is given."
    from dropclass.cli import main as dropclass
    argv = list(sys.argv[1:] if argv is None else argv)
    preset = argv[argv.index("--preset") + 1] if "--preset" in argv else "study"
    if "--out" not in argv: argv += ["--out", str(RESULTS / f"study_{preset}")]
    return dropclass(["compare", *argv])


if __name__ == "__main__":
    sys.exit(main())
