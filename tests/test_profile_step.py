"""The step profiler (benchmarks/profile_step.py) at tiny size: the phases add up to the step, the share outside the
model is the sum of its phases, the bare step and the side-by-side pair are recorded, a failed variant does not stop it."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import profile_step  # noqa: E402


def test_tiny_profile(tmp_path):
    out = tmp_path / "profile.json"
    assert profile_step.main(["--sizes", "tiny", "--threads", "1", "--iters", "2", "--warmup", "1", "--pairs",
                              "--variant", "bad=nosuch=1", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["machine"]["cores"] and "vector_extensions" in d["machine"] and d["machine"]["torch"]
    rows = {r["method"]: r for r in d["cases"]}
    assert set(rows) == {"baseline", "dropclass"}
    for r in rows.values():
        assert sum(r["phase_seconds"].values()) == pytest.approx(r["step_seconds"], rel=1e-2, abs=1e-3)
        assert sum(r["phase_share"].values()) == pytest.approx(1.0, abs=1e-3)
        head = r["head_upsampling_seconds"] / r["step_seconds"]  # the model head's upsampling, run inside the loss
        assert 0 <= head <= r["phase_share"]["loss"] + 1e-3
        assert r["outside_model_share"] == pytest.approx(sum(r["phase_share"][p] for p in profile_step.OUTSIDE) - head, abs=2e-3)
        assert all(v >= 0 for v in r["phase_seconds"].values()) and r["phase_seconds"]["forward"] > 0
    for r in rows.values():
        assert r["bare_step_seconds"] > 0 and r["overhead_share"] == pytest.approx(1 - r["bare_step_seconds"] / r["step_seconds"], abs=2e-3)
    assert rows["dropclass"]["head_upsampling_seconds"] > 0  # the tiny net's logits are at half resolution
    assert {f["variant"] for f in d["failed"]} == {"bad"} and "nosuch" in d["failed"][0]["error"]
    (pair,) = d["pairs"]  # the failed variant is not paired
    assert pair["variant"] == "today"
    assert set(pair["step_seconds"]) == {"baseline", "dropclass"} and pair["side_by_side_speedup"] > 0


def test_blas_threads_benchmark_measures_both_ways_and_restores_the_limit(tmp_path):
    import bench_blas_threads
    import dropclass.data.synthetic as syn
    today, out = syn.one_blas_thread, tmp_path / "blas.json"
    assert bench_blas_threads.main(["--rounds", "1", "--steps", "2", "--size", "64x128", "--threads", "1", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert set(d["ways"]) == {"blas_default_threads", "one_blas_thread"} and d["machine"]["torch"]
    for r in d["ways"].values(): assert r["steps"] == 1 and r["data_seconds_median"] > 0 and r["model_seconds_median"] > 0
    assert d["data_ratio_default_over_one"] == pytest.approx(
        d["ways"]["blas_default_threads"]["data_seconds_median"] / d["ways"]["one_blas_thread"]["data_seconds_median"], abs=0.01)
    assert syn.one_blas_thread is today  # the script puts the library's limit back


@pytest.mark.parametrize("method", ["baseline", "dropclass"])
def test_the_bare_loss_equals_the_library_loss(method):
    "The bare step's loss, written with torch's cross_entropy, is the library's loss of the same output (lambda 0.5)."
    import torch
    from dropclass.losses import DropClassLoss, upsampled_cross_entropy
    from dropclass.build import build_model
    from dropclass.config import config_from
    cfg = config_from("tiny", [f"method={method}"])
    torch.manual_seed(0)
    net = build_model(cfg, num_classes=19).train()
    images, masks = torch.randn(2, 3, 64, 128), torch.randint(0, 19, (2, 64, 128))
    masks[:, :4] = 255
    weight = torch.rand(19) + 0.5
    if method == "dropclass":
        net.drop_prob = 1.0
        out = net(images)
        assert out.dropped is not None
        want, _ = DropClassLoss(weight=weight, alpha=cfg.alpha)(out, masks, lam=0.5)
    else:
        out = net(images)
        want = upsampled_cross_entropy(out, masks, weight=weight)
    got = profile_step.bare_loss(cfg, out, masks, weight, 255)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
