"""The dose-response script (benchmarks/dose_response.py): its count of drops per class against a hand computation, the
run length it picks for a dose, and a tiny run end to end (JSON with both models, both branches and the diagnostics)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from _shared import scaled
from dropclass.config import config_from

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import dose_response  # noqa: E402


def test_expected_drops_by_hand():
    # ramps per iteration ending half way: p(it) = it / 50 for it < 50, then 1; sum over 100 iterations = 24.5 + 50
    cfg = config_from("study", ["max_iters=100", "ramp=iter", "ramp_end=0.5"])
    assert dose_response.expected_drops(cfg) == pytest.approx(74.5 / 19)
    # the official ramps: stepped per epoch (10 epochs of 10), ending at the end: p = e / 10 for epoch e, mean 0.45
    cfg = config_from("study", ["max_iters=100", "ramp=epoch", "iters_per_epoch=10"])
    assert dose_response.expected_drops(cfg) == pytest.approx(45 / 19)
    # p_max scales it
    cfg = config_from("study", ["max_iters=100", "ramp=iter", "ramp_end=0.5", "p_max=0.5"])
    assert dose_response.expected_drops(cfg) == pytest.approx(74.5 / 19 / 2)


@pytest.mark.parametrize("dose", [3, 40])
def test_iters_for_is_the_shortest_run_that_reaches_the_dose(dose):
    recipe = dose_response.RECIPE
    n = dose_response.iters_for(dose, "study", recipe)
    assert n % 10 == 0
    drops = lambda k: dose_response.expected_drops(config_from("study", [*recipe, f"max_iters={k}"]))
    assert drops(n) >= dose > drops(n - 10)


def test_tiny_run_writes_both_models_and_the_diagnostics(tmp_path):
    out = tmp_path / "dose.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "dose_response.py"), "--doses", "1", "--preset", "tiny", "--set", "crop_size=32x64",
           "--runs", str(tmp_path / "runs"), "--tiny", "--out", str(out), "--quiet", "--jobs", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(600))  # a guard against a hung script only
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(out.read_text())
    row = d["doses"]["1"]
    assert row["drops_per_class"] >= 1 and row["iters"] == dose_response.iters_for(1, "tiny", [*dose_response.RECIPE, "crop_size=32x64"])
    assert row["config"]["max_iters"] == row["iters"] and row["config"]["ramp"] == "iter" and row["config"]["ramp_end"] == 0.1
    for split in ("val", "counterfactual"):
        assert set(row[split]) == {"baseline", "dropclass", "dropclass_plain"}
        for model in row[split].values(): assert 0 <= model["miou"] <= 100 and 0 <= model["miou_dagger"] <= 100
    assert all(row["train_seconds"][m] > 0 for m in ("baseline", "dropclass"))
    diag = row["diagnostics"]
    assert 0 <= diag["still_predicted"] <= 1 and 0 <= diag["accuracy_drop"] <= 1 and 0 <= diag["accuracy_plain"] <= 1
    assert diag["still_predicted_rare_relative"] is None or diag["still_predicted_rare_relative"] >= 0
    assert 0 <= diag["rare_predicted"] <= len(row["rare_classes"]) and set(diag["recall_before"]) == set(diag["per_class"])
    assert set(diag["per_class"]) == set(row["val_iou_baseline"]) == set(row["val_iou_dropclass"]) and len(diag["per_class"]) == 19
    # a second call reuses the finished runs: same numbers, nothing trained again
    before = (tmp_path / "runs").glob("**/last.pt")
    mtimes = {p: p.stat().st_mtime_ns for p in before}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(600))
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(out.read_text())["doses"]["1"]["val"] == row["val"]
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    # a variant of DropClass against the same baseline: the baseline is linked in, not trained again
    var = tmp_path / "variant.json"
    r = subprocess.run([*cmd[:cmd.index("--runs")], "--runs", str(tmp_path / "group"), "--baseline-runs", str(tmp_path / "runs"),
                        "--dropclass-set", "compensation_norm=group", "--tiny", "--out", str(var), "--quiet", "--jobs", "1"],
                       capture_output=True, text=True, timeout=scaled(600))
    assert r.returncode == 0, r.stderr[-3000:]
    v = json.loads(var.read_text())
    assert v["dropclass_only"] == ["compensation_norm=group"] and v["doses"]["1"]["config"]["compensation_norm"] == "group"
    assert v["doses"]["1"]["val"]["baseline"] == row["val"]["baseline"]  # the same baseline
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # its weights untouched
    assert (tmp_path / "group" / f"iters{row['iters']}" / "seed0" / "baseline").is_symlink()
