"""benchmarks/compare_demo_runs.py, the before/after check of a refactor: it sees a changed number and ignores wall time."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_demo_runs.py"


def _demo_folder(root: Path, miou: float, time: float) -> Path:
    for run in ("baseline", "dropclass"):
        (root / run).mkdir(parents=True)
        (root / run / "history.jsonl").write_text(json.dumps({"step": 1, "ce": 2.5, "time": time}) + "\n")
        (root / run / "metrics.json").write_text(json.dumps({"config": {"lr": 0.1}, "splits": {"val": {"miou": miou}}}))
    for t in ("table_val.md", "table_val.csv", "table_counterfactual.md", "table_counterfactual.csv"): (root / t).write_text("x")
    return root


def test_it_reports_a_changed_number_and_ignores_time(tmp_path):
    a = _demo_folder(tmp_path / "a", 0.25, 1.0)
    b = _demo_folder(tmp_path / "b", 0.25, 7.0)
    c = _demo_folder(tmp_path / "c", 0.26, 1.0)
    same = json.loads(subprocess.run([sys.executable, SCRIPT, a, b], capture_output=True, text=True, check=True).stdout)
    assert same["baseline/history.jsonl"] == {"bytes_equal": False, "lines": [1, 1], "equal_without_time": True}
    assert same["dropclass/metrics.json"]["differences_besides_timing"] == {}
    other = json.loads(subprocess.run([sys.executable, SCRIPT, a, c], capture_output=True, text=True, check=True).stdout)
    assert other["dropclass/metrics.json"]["differences_besides_timing"] == {"/splits/val/miou": [0.25, 0.26]}
