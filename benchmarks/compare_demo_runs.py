"""Compare the output folders of two `dropclass demo` runs (say, of two commits): each run's history.jsonl byte for byte
and entry for entry without its wall-clock `time`, the tables byte for byte, and metrics.json value for value.

    git worktree add /tmp/before <commit>   # or any clone of the older commit
    PYTHONPATH=/tmp/before python -m dropclass.cli demo --quick --out /tmp/before_runs --quiet
    python -m dropclass.cli demo --quick --out /tmp/after_runs --quiet
    python benchmarks/compare_demo_runs.py /tmp/before_runs /tmp/after_runs > result.json
"""
import json, sys, hashlib
from pathlib import Path
a, b = Path(sys.argv[1]), Path(sys.argv[2])
out = {}
def flat(d, p=""):
    if isinstance(d, dict):
        for k, v in d.items(): yield from flat(v, f"{p}/{k}")
    elif isinstance(d, list):
        for i, v in enumerate(d): yield from flat(v, f"{p}[{i}]")
    else: yield p, d
for run in ("baseline", "dropclass"):
    ha, hb = (x / run / "history.jsonl" for x in (a, b))
    la, lb = ha.read_text().splitlines(), hb.read_text().splitlines()
    strip = lambda l: {k: v for k, v in json.loads(l).items() if k != "time"}
    out[f"{run}/history.jsonl"] = {"bytes_equal": ha.read_bytes() == hb.read_bytes(), "lines": [len(la), len(lb)],
        "equal_without_time": [strip(x) for x in la] == [strip(y) for y in lb]}
    ma, mb = (json.loads((x / run / "metrics.json").read_text()) for x in (a, b))
    fa, fb = dict(flat(ma)), dict(flat(mb))
    nums = [k for k in fa if k in fb and isinstance(fa[k], (int, float)) and not isinstance(fa[k], bool)]
    diff = {k: (fa.get(k, "<absent>"), fb.get(k, "<absent>")) for k in fa.keys() | fb.keys() if fa.get(k, "<absent>") != fb.get(k, "<absent>")}
    timing = {k for k in diff if any(t in k for t in ("seconds", "time", "machine", "_s", "date", "wall"))}
    out[f"{run}/metrics.json"] = {"numbers_compared": len(nums), "differences_besides_timing": {k: diff[k] for k in sorted(set(diff) - timing)},
                                  "timing_fields_differing": sorted(timing)}
for t in ("table_val.md", "table_val.csv", "table_counterfactual.md", "table_counterfactual.csv"):
    out[t] = {"bytes_equal": (a / t).read_bytes() == (b / t).read_bytes()}
print(json.dumps(out, indent=1, default=str))
