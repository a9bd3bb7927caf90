"""The head probe's benchmark script (benchmarks/probe.py) at tiny size: it reads a trained run, writes the JSON and the
figure, skips what it has measured, and refuses a run without a drop branch. The probe itself is tested in notebook 27."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from _shared import scaled
from dropclass.config import config_from
from dropclass.train import train

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "probe.py"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_runs")
    for method in ("dropclass", "baseline"):
        train(config_from("tiny", {"method": method, "max_iters": 4, "ckpt_every": 4, "out_dir": str(root / method), "compensation_norm": "batch",
                                   "class_weights": "median", "progress": False}))
    return root


def _probe(*args):
    # a guard against a hung script only
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=scaled(600))


def test_probe_script_writes_every_variant_and_reuses_them(runs, tmp_path):
    out = tmp_path / "probe.json"
    r = _probe("--run", runs / "dropclass", "--tiny", "--variants", "official", "frozen_bn", "z_present", "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(out.read_text())
    assert set(d["variants"]) == {"official", "frozen_bn", "z_present"} and d["train_scenes"] == 8 and d["val_scenes"] == 4
    assert len(d["class_weights"]) == 19  # the run's median-frequency weights
    assert d["variants"]["frozen_bn"]["settings"]["norm"] == "frozen" and d["variants"]["z_present"]["settings"]["draw"] == "present"
    for v in d["variants"].values():
        assert [row["drops_per_class"] for row in v["rows"]] == [0, 1] and v["rows"][1]["iterations"] == 19
        for row in v["rows"]:
            assert 0 <= row["still_predicted"] <= 1 and 0 <= row["accuracy_drop"] <= 1 and 0 <= row["accuracy_plain"] <= 1
            assert len(row["per_class"]["still_predicted"]) == 19
    # the untrained checkpoint (0 drops) is the same head in every variant whose eval-mode model is the run's own
    assert d["variants"]["official"]["rows"][0] == d["variants"]["frozen_bn"]["rows"][0] == d["variants"]["z_present"]["rows"][0]
    assert out.with_suffix(".png").stat().st_size > 10_000
    again = _probe("--run", runs / "dropclass", "--tiny", "--variants", "official", "no_norm", "--out", out, "--quiet")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "official: already measured" in again.stdout and "no_norm: already measured" not in again.stdout
    d = json.loads(out.read_text())
    # the earlier call's variants are kept
    assert set(d["variants"]) == {"official", "frozen_bn", "z_present", "no_norm"}
    assert len(d["commands"]) == 2


def test_probe_script_refuses_what_it_cannot_probe(runs, tmp_path):
    r = _probe("--run", runs / "baseline", "--tiny", "--out", tmp_path / "p.json")
    assert r.returncode == 2 and "the probe needs a DropClass run" in r.stderr
    r = _probe("--run", tmp_path / "nothing", "--tiny")
    assert r.returncode == 2 and "no checkpoint at" in r.stderr
