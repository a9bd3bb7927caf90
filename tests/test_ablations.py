"""Ablations: variant configs, evaluation-only variants, the paired summary, the command."""
import json
import statistics

import pytest

from dropclass.ablations import ABLATIONS, ablation_config, ablation_markdown, run_variant, summarise_ablations
from dropclass.cli import main as cli
from dropclass.checkpoints import load_checkpoint


def test_every_variant_differs_from_the_preset_only_where_it_says():
    base = ablation_config("baseline", 0, "/r", "demo")
    for v, (_, overrides) in ABLATIONS.items():
        cfg = ablation_config(v, 0, "/r", "demo")
        flat, flat_base = cfg.to_dict(), base.to_dict()  # DropClass's options by their own names
        changed = {k for k in flat if flat[k] != flat_base[k]} - {"out_dir"}
        assert changed <= set(overrides), (v, changed)


def test_plain_inference_is_the_dropclass_run_evaluated_differently(tmp_path):
    plain = run_variant("dropclass_plain_inference", 0, tmp_path, "tiny", progress=False)
    drop = run_variant("dropclass", 0, tmp_path, "tiny", progress=False)  # already trained: reused
    assert not (tmp_path / "seed0" / "dropclass_plain_inference" / "last.pt").exists()
    assert load_checkpoint(tmp_path / "seed0" / "dropclass" / "last.pt")["step"] == 6
    assert set(plain) == set(drop) == {"val", "counterfactual"}
    assert plain["val"]["iou"] != drop["val"]["iou"]  # another prediction path, other numbers


def test_summary_is_paired_by_seed():
    r = lambda v, c: {"val": {"miou": v, "miou_dagger": v}, "counterfactual": {"miou": c, "miou_dagger": c}}
    results = {"baseline": {0: r(0.30, 0.20), 1: r(0.40, 0.30), 2: r(0.50, 0.40)},
               "dropclass": {0: r(0.31, 0.19), 1: r(0.41, 0.29), 2: r(0.49, 0.41)}}
    s = summarise_ablations(results)["dropclass"]
    assert s["val/miou"]["delta_mean"] == pytest.approx((0.01 + 0.01 - 0.01) / 3)
    assert s["val/miou"]["wins"] == 2 and s["counterfactual/miou"]["wins"] == 1
    assert s["val/miou"]["std"] == pytest.approx(statistics.stdev([0.31, 0.41, 0.49]))
    md = ablation_markdown(summarise_ablations(results), [0, 1, 2])
    assert "| dropclass | 40.3 ± 9.0" in md and "(2/3)" in md


def test_ablate_command(tmp_path, capsys):
    out = tmp_path / "ablations.json"
    assert cli(["ablate", "--seeds", "0", "--variants", "dropclass_no_sup", "--preset", "tiny", "--runs", str(tmp_path),
                "--out", str(out), "--quiet"]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert set(summary) == {"baseline", "dropclass_no_sup"}
    assert "dropclass_no_sup" in capsys.readouterr().out
    assert cli(["ablate", "--variants", "nonsense", "--runs", str(tmp_path)]) == 2
    assert "unknown variant 'nonsense'" in capsys.readouterr().err
